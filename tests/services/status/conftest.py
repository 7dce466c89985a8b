"""What the status tests share: a repository with one Python model, and real inferences."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import tritonclient.http as httpclient

from support.models import IDENTITY_MODEL, identity_config, write_model


@pytest.fixture
def identity_repo(tmp_path):
    repo = tmp_path / "models"
    write_model(repo, "identity", identity_config("identity"), IDENTITY_MODEL)
    return repo


@pytest.fixture
def infer_identity() -> Callable:
    def infer_n(proc, n: int) -> None:
        """n sequential tritonclient inferences of `identity`, each checked."""
        client = httpclient.InferenceServerClient(proc.http_address)
        data = np.arange(4, dtype=np.float32)
        for _ in range(n):
            inp = httpclient.InferInput("INPUT0", list(data.shape), "FP32")
            inp.set_data_from_numpy(data)
            assert np.array_equal(client.infer("identity", [inp]).as_numpy("OUTPUT0"), data)
        client.close()
    return infer_n
