"""Settings: parsing of the structured variables, and a documented default for every one."""

from __future__ import annotations

from pathlib import Path

import pytest

from openft.config import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_every_setting_is_documented() -> None:
    documented = DOCS.read_text()
    for name, field in Settings.model_fields.items():
        variable = field.alias or f"OPENFT_{name.upper()}"
        assert f"`{variable}`" in documented, f"{variable} is missing from docs/configuration.md"
        assert field.description, f"{name} has no description"


def test_keys_and_models_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENFT_API_KEYS", " sk-a:acme , sk:with:colons:globex ")
    monkeypatch.setenv("OPENFT_BASE_MODELS", "org/model=/models/a,tiny:v1.5=/models/b")
    settings = Settings()
    assert settings.api_key_organizations == {"sk-a": "acme", "sk:with:colons": "globex"}
    assert settings.registered_base_models == {"org/model": Path("/models/a"), "tiny:v1.5": Path("/models/b")}
    assert not settings.single_user


@pytest.mark.parametrize(("variable", "value"), [("OPENFT_API_KEYS", "no-organization"), ("OPENFT_BASE_MODELS", "x")])
def test_malformed_pairs_are_refused(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    settings = Settings()
    with pytest.raises(ValueError, match=variable):
        _ = settings.api_key_organizations if variable == "OPENFT_API_KEYS" else settings.registered_base_models


def test_admin_keys_are_keys_of_their_organization(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENFT_API_KEYS", "sk-a:acme,sk-b:globex")
    monkeypatch.setenv("OPENFT_ADMIN_KEYS", "sk-admin:acme, sk-b:globex")
    settings = Settings()
    assert settings.admin_key_organizations == {"sk-admin": "acme", "sk-b": "globex"}
    assert settings.key_organizations == {"sk-a": "acme", "sk-b": "globex", "sk-admin": "acme"}
    assert settings.organizations == {"acme", "globex"}


def test_admin_keys_alone_leave_single_user_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENFT_API_KEYS", raising=False)
    monkeypatch.delenv("OPENFT_ADMIN_KEYS", raising=False)
    assert Settings().single_user and Settings().organizations == {"personal"}
    monkeypatch.setenv("OPENFT_ADMIN_KEYS", "sk-admin:acme")
    assert not Settings().single_user and Settings().organizations == {"acme"}


@pytest.mark.parametrize("admin_keys", ["no-organization", "sk-a:globex"])
def test_malformed_or_conflicting_admin_keys_are_refused(monkeypatch: pytest.MonkeyPatch, admin_keys: str) -> None:
    monkeypatch.setenv("OPENFT_API_KEYS", "sk-a:acme")
    monkeypatch.setenv("OPENFT_ADMIN_KEYS", admin_keys)
    with pytest.raises(ValueError, match="OPENFT_ADMIN_KEYS"):
        _ = Settings().key_organizations
