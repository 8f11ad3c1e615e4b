"""Prints how to call a running gateway with tritonclient (``make serve`` shows it before starting)."""

from __future__ import annotations

import argparse

SNIPPET = """\
import numpy as np
import tritonclient.grpc as grpcclient

client = grpcclient.InferenceServerClient("{target}")
x = np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32)
inp = grpcclient.InferInput("input", list(x.shape), "FP32")
inp.set_data_from_numpy(x)
result = client.infer("classifier", [inp])
print("classifier version", result.get_response().model_version)
print("probabilities", result.as_numpy("probabilities").tolist())
print("labels", result.as_numpy("label").tolist())

y = np.random.default_rng(1).normal(size=(2, 8)).astype(np.float32)
inp = grpcclient.InferInput("input", list(y.shape), "FP32")
inp.set_data_from_numpy(y)
print("predictions", client.infer("regressor", [inp]).as_numpy("prediction").tolist())"""


def snippet(target: str) -> str:
    """The copy-paste client snippet for a gateway at ``target`` (host:port)."""
    return SNIPPET.format(target=target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.quickstart")
    parser.add_argument("--target", default="127.0.0.1:8001")
    args = parser.parse_args(argv)
    print(f"Starting infergate on {args.target}. Call it with tritonclient, from another shell:\n")
    print(".venv/bin/python - <<'PY'")
    print(snippet(args.target))
    print("PY\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
