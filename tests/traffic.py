"""Client traffic for integration tests: threads sending requests to one model until stopped, keeping every
answer (with when it was sent) and every error, for tests that watch which version answers over time."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


class Traffic:
    """Threads sending FP32 requests of 1-3 random rows of ``features`` columns (input ``x``) to ``model``
    until stopped; each answer kept as (version, x, ``output``), with its send time (monotonic) in
    ``sent``. With ``request_ids`` every request carries a random id (sticky canary assignment)."""

    def __init__(
        self,
        target: str,
        threads: int = 3,
        *,
        features: int,
        output: str,
        model: str = "m",
        request_ids: bool = True,
    ) -> None:
        self.target, self.model, self.request_ids = target, model, request_ids
        self.features, self.output = features, output
        self.answers: list[tuple[str, np.ndarray, np.ndarray]] = []
        self.sent: list[float] = []  # when each answered request was sent (monotonic)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        with grpcclient.InferenceServerClient(self.target) as client:
            while not self._stop.is_set():
                x = rng.normal(size=(int(rng.integers(1, 4)), self.features)).astype(np.float32)
                tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                sent = time.monotonic()
                request_id = uuid.uuid4().hex if self.request_ids else ""
                try:
                    result = client.infer(self.model, [tensor], request_id=request_id)
                except InferenceServerException as exc:
                    with self._lock:
                        self.errors.append(str(exc))
                    continue
                with self._lock:
                    self.answers.append(
                        (result.get_response().model_version, x, result.as_numpy(self.output))
                    )
                    self.sent.append(sent)

    def versions_sent_after(self, moment: float) -> set[str]:
        """Versions that answered requests sent after ``moment`` (monotonic)."""
        with self._lock:
            return {v for (v, _, _), sent in zip(self.answers, self.sent, strict=True) if sent > moment}

    def count(self) -> int:
        with self._lock:
            return len(self.answers)

    def wait_more(self, answers: int, timeout: float = 10.0) -> None:
        """Returns once ``answers`` more requests were answered (or after ``timeout``)."""
        target = self.count() + answers
        deadline = time.monotonic() + timeout
        while self.count() < target and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
