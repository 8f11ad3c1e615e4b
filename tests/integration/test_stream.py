"""ModelStreamInfer through tritonclient's bidirectional stream: answers matched by id, errors in-stream."""

from __future__ import annotations

import queue

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.servers import ServerThread


def test_stream_answers_every_request_and_reports_errors_in_stream(gateway: ServerThread) -> None:
    answers: queue.Queue[tuple[grpcclient.InferResult | None, InferenceServerException | None]] = (
        queue.Queue()
    )
    with grpcclient.InferenceServerClient(gateway.target) as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        sent = {}
        for i in range(20):
            rows = i % 5 + 1
            x = np.full((rows, 3), i, np.float32)
            shape = [rows, 4] if i == 7 else [rows, 3]  # request 7 is malformed
            tensor = grpcclient.InferInput("x", shape, "FP32")
            if i == 7:
                tensor.set_data_from_numpy(np.zeros((rows, 4), np.float32))
            else:
                tensor.set_data_from_numpy(x)
            client.async_stream_infer("dtype_fp32", [tensor], request_id=f"r{i}")
            sent[f"r{i}"] = x
        results = [answers.get(timeout=10) for _ in range(20)]
        client.stop_stream()
    errors = [error for _, error in results if error is not None]
    assert len(errors) == 1
    assert "'x'" in str(errors[0])
    assert "axis 1" in str(errors[0])
    ok = {r.get_response().id: r for r, e in results if r is not None and e is None}
    assert set(ok) == set(sent) - {"r7"}
    for request_id, result in ok.items():
        np.testing.assert_array_equal(result.as_numpy("y"), 2 * sent[request_id])
        assert result.get_response().model_version == "1"
