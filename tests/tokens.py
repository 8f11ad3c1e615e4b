"""Token files for the security tests: four bearer tokens with different scopes, and a wrong one.

The token strings are what the tests check never shows up in logs, error messages or reports.
"""

from __future__ import annotations

import json
from pathlib import Path

from gateway.grants import hash_token

#: token -> (name, scopes); the token strings are what must never show up in logs or messages.
TOKENS = {
    "tok-infer-8c1f0e": ("infer-only", ["infer"]),
    "tok-meta-51aa9d": ("metadata-only", ["metadata"]),
    "tok-repo-0b77e2": ("repo", ["repository"]),
    "tok-all-93d4c6": ("all", ["infer", "metadata", "repository"]),
}
WRONG = "tok-wrong-7f2e11"


def write_tokens(path: Path, tokens: dict[str, tuple[str, list[str]]]) -> Path:
    path.write_text(
        "".join(
            f'[[token]]\nname = "{name}"\nsha256 = "{hash_token(token)}"\nscopes = {json.dumps(scopes)}\n'
            for token, (name, scopes) in tokens.items()
        )
    )
    return path
