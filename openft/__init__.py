"""openft: a self-hosted fine-tuning service that speaks OpenAI's Fine-tuning API."""

__version__ = "0.1.0"
