"""The token file: parsing and validation, O(1) lookups, certificate identities, reload on change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.grants import METHOD_SCOPES, GrantFileError, GrantStore, hash_token, parse_grants


def _file(tokens: dict[str, list[str]]) -> str:
    """A token file granting ``<name>-secret`` the scopes listed under each name."""
    return "\n".join(
        f'[[token]]\nname = "{name}"\nsha256 = "{hash_token(name + "-secret")}"\n'
        f"scopes = {json.dumps(scopes)}\n"
        for name, scopes in tokens.items()
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_every_inference_method_has_a_scope() -> None:
    assert set(METHOD_SCOPES.values()) == {"infer", "metadata", "repository"}
    assert METHOD_SCOPES["/inference.GRPCInferenceService/RepositoryModelUnload"] == "repository"
    assert METHOD_SCOPES["/inference.GRPCInferenceService/ModelStreamInfer"] == "infer"
    assert METHOD_SCOPES["/inference.GRPCInferenceService/RepositoryIndex"] == "metadata"


def test_parse_and_lookup(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(_file({"ci": ["infer"], "ops": ["metadata", "repository"]}))
    store = GrantStore(path)
    ci = store.lookup("ci-secret")
    assert ci is not None
    assert ci.name == "ci"
    assert ci.scopes == frozenset({"infer"})
    ops = store.lookup("ops-secret")
    assert ops is not None
    assert ops.scopes == frozenset({"metadata", "repository"})
    assert store.lookup("ci-secre") is None
    assert store.lookup("") is None
    assert store.lookup(hash_token("ci-secret")) is None  # the hash itself is no credential


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[tokens]]\n", "unknown key 'tokens'"),
        ('[[token]]\nname = "a"\nsha256 = "00"\nscopes = []\n', "64 hex digits"),
        ('[[token]]\nname = "a"\nsha256 = "' + "g" * 64 + '"\nscopes = []\n', "64 hex digits"),
        ('[[token]]\nname = "a"\nsha256 = "' + "0" * 64 + '"\nscopes = ["admin"]\n', "unknown scope 'admin'"),
        ('[[token]]\nname = "a"\nsha256 = "' + "0" * 64 + '"\nscope = ["infer"]\n', "unknown key 'scope'"),
        ('[[token]]\nsha256 = "' + "0" * 64 + '"\nscopes = ["infer"]\n', "name must be"),
        ('[[certificate]]\nname = "a"\nscopes = ["infer"]\n', "exactly one of subject, san"),
        ('[[certificate]]\nname = "a"\nsubject = "x"\nsan = "y"\nscopes = []\n', "exactly one of"),
        ("token = 3\n", "array of tables"),
        ("[[token\n", "not valid TOML"),
    ],
)
def test_invalid_files_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(GrantFileError, match=message):
        parse_grants(text)


def test_repeated_hash_is_an_error() -> None:
    entry = f'[[token]]\nname = "a"\nsha256 = "{hash_token("t")}"\nscopes = []\n'
    with pytest.raises(GrantFileError, match="repeats the hash of token 'a'"):
        parse_grants(entry + entry.replace('"a"', '"b"'))


def test_certificate_identities() -> None:
    grants = parse_grants(
        '[[certificate]]\nname = "jobs"\nsubject = "batch-client"\nscopes = ["infer"]\n'
        '[[certificate]]\nname = "mesh"\nsan = "spiffe://c/ns/x"\nscopes = ["metadata"]\n'
    )
    assert grants.subjects["batch-client"].name == "jobs"
    assert grants.sans["spiffe://c/ns/x"].name == "mesh"


def test_reload_on_change_with_a_fake_clock(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(_file({"ci": ["infer"]}))
    clock = FakeClock()
    store = GrantStore(path, check_interval=1.0, clock=clock)
    path.write_text(_file({"ci": ["infer", "metadata"], "new": ["infer"]}))
    store.maybe_reload()  # the interval has not passed: no stat, old grants
    assert store.lookup("new-secret") is None
    clock.now = 1.0
    store.maybe_reload()
    grant = store.lookup("new-secret")
    assert grant is not None
    assert grant.name == "new"
    ci = store.lookup("ci-secret")
    assert ci is not None
    assert "metadata" in ci.scopes
    assert store.reloads == 1
    # a broken file keeps the grants in force
    path.write_text("[[token]]\nname = 'x'\n")
    clock.now = 2.0
    store.maybe_reload()
    assert store.failed_reloads == 1
    assert store.lookup("new-secret") is not None
    # an unchanged file is not parsed again
    clock.now = 3.0
    store.maybe_reload()
    assert store.failed_reloads == 1
    assert "ci-secret" not in caplog.text
    assert "new-secret" not in caplog.text
