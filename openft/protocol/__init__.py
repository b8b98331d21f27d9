"""Wire objects: pydantic models mirroring OpenAI's, field for field, one module per resource."""
