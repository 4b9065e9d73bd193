"""The sandbox's S3 server, and a real Triton loading its model repository from it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http.aio as triton_http

from gelu_lab.sandbox.s3 import ACCESS_KEY, REGION, SECRET_KEY, S3Server
from gelu_lab.sandbox.triton import TritonServer, TritonStartError
from gelu_rollout.adapters.triton import infer
from gelu_rollout.variants import render_repository, write_repository

pytestmark = pytest.mark.triton

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_DEFAULT_REGION": REGION,
}
EXPLICIT = ("--model-control-mode=explicit", "--load-model=gelu")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    root = tmp_path_factory.mktemp("repository")
    write_repository(root, "gelu", render_repository("gelu", "tanh"))
    with S3Server() as server:
        server.create_bucket("models")
        keys = server.upload_folder("models", "gelu/v1", root)
        assert "gelu/v1/gelu/config.pbtxt" in keys
        yield server


@pytest.mark.asyncio
async def test_triton_serves_a_model_repository_from_the_sandboxes_s3(s3: S3Server) -> None:
    with TritonServer(
        f"s3://{s3.endpoint}/models/gelu/v1", extra_args=EXPLICIT, extra_env=CREDENTIALS
    ) as server:
        client = triton_http.InferenceServerClient(server.http_url)
        try:
            answers = await infer(client, "gelu", np.zeros((4, 16), dtype=np.float32))
        finally:
            await client.close()
    assert answers.shape == (4, 16)
    assert np.isfinite(answers).all()


def test_a_missing_bucket_fails_the_start_and_the_log_says_why(
    s3: S3Server, tmp_path: Path
) -> None:
    server = TritonServer(
        f"s3://{s3.endpoint}/no-such-bucket/gelu",
        extra_args=EXPLICIT,
        extra_env=CREDENTIALS,
        log_path=tmp_path / "triton.log",
        ready_timeout_s=30.0,
    )
    with pytest.raises(TritonStartError) as failure:
        server.start()
    # What the server said, in the error (the operator shows it as the pod's message).
    assert "S3" in str(failure.value)
