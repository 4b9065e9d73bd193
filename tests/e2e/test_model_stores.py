"""Model repositories Triton reads itself, end to end on the sandbox: an S3 bucket on a real
S3 server (moto on loopback) and a PersistentVolumeClaim-style folder.

Each test prints its outcome (``E2E ...`` lines) for the record.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Final

import pytest
import tritonclient.http.aio as triton_http

import gelu_lab
from gelu_lab.sandbox.s3 import ACCESS_KEY, REGION, SECRET_KEY, S3Server
from gelu_lab.sandbox.stack import sandbox
from gelu_rollout.variants import render_repository, write_repository
from tests.e2e.test_operator import MODEL, apply, condition, finished, manifest, traffic

pytestmark = [pytest.mark.e2e, pytest.mark.triton, pytest.mark.prometheus, pytest.mark.slow]

PLAIN_MODEL: Final = "plain_gelu"
PLAIN_GELU: Final = Path(gelu_lab.__file__).parent / "models" / PLAIN_MODEL

SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "model-store", "namespace": "default"},
    "type": "Opaque",
    "stringData": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
}


def repository(root: Path, variant: str) -> Path:
    write_repository(root, MODEL, render_repository(MODEL, variant))
    return root


def args_of(deployment: dict[str, Any]) -> list[str]:
    return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])


def s3_rollout(name: str, s3: S3Server, candidate_uri: str, **traffic: Any) -> dict[str, Any]:
    """A rollout from the sandbox's bucket: the baseline at ``s3://models/gelu/v1``, the
    candidate at ``candidate_uri`` (revision v2), both with the Secret's credentials."""
    storage = {"endpoint": s3.endpoint, "region": REGION, "credentialsSecretName": "model-store"}
    rollout = manifest(
        name, {"storageUri": candidate_uri, "revision": "v2", "storage": storage}, **traffic
    )
    rollout["spec"]["baseline"] = {
        "storageUri": "s3://models/gelu/v1",
        "revision": "v1",
        "storage": storage,
    }
    return rollout


@pytest.mark.asyncio
async def test_an_s3_candidate_is_promoted_beside_a_baseline_from_another_prefix() -> None:
    with S3Server() as s3, tempfile.TemporaryDirectory() as folder:
        s3.create_bucket("models")
        s3.upload_folder("models", "gelu/v1", repository(Path(folder) / "v1", "exact"))
        s3.upload_folder("models", "gelu/v2", repository(Path(folder) / "v2", "tanh"))
        rollout = s3_rollout(
            "s3", s3, "s3://models/gelu/v2", steps=[{"weight": 50, "analysisSeconds": 20}]
        )
        async with sandbox() as stack:
            await apply(stack, SECRET)
            await apply(stack, rollout)
            async with traffic(stack, "s3"):
                done = await stack.wait_for("s3", finished, timeout_s=200)
            status = done["status"]
            assert status["stage"] == "Promoted", status["message"]
            # The baseline now serves the candidate's prefix, read from the bucket.
            baseline = await stack.get("deployment", "s3-baseline")
            assert f"--model-repository=s3://{s3.endpoint}/models/gelu/v2" in args_of(baseline)
            listed = json.loads(await stack.kubectl("get", "configmaps", "-o", "json"))
            names = [c["metadata"]["name"] for c in listed["items"]]
            assert not [n for n in names if n.startswith("s3-")], names  # nothing copied
            print("E2E s3:", status["message"], "in", status["finishedAt"])


@pytest.mark.asyncio
async def test_a_candidate_from_a_volume_that_emits_nan_is_rolled_back() -> None:
    rollout = manifest(
        "pvc",
        {"storageUri": "pvc://model-store/gelu/v2", "revision": "v2"},
        steps=[{"weight": 50, "analysisSeconds": 20}],
    )
    rollout["spec"]["baseline"] = {"storageUri": "pvc://model-store/gelu/v1", "revision": "v1"}
    async with sandbox() as stack:
        claim = stack.pods.volume_path("default", "model-store")
        repository(claim / "gelu" / "v1", "exact")
        repository(claim / "gelu" / "v2", "tanh-fp16-naive")
        await apply(stack, rollout)
        done = await stack.wait_for("pvc", finished, timeout_s=150)
        status = done["status"]
        assert status["stage"] == "RolledBack", status["message"]
        assert condition(done, "RolledBack")["reason"] == "ProbeFailed"
        candidate = await stack.get("deployment", "pvc-candidate")
        volumes = candidate["spec"]["template"]["spec"]["volumes"]
        assert {"claimName": "model-store", "readOnly": True} in [
            v.get("persistentVolumeClaim") for v in volumes
        ]
        print("E2E pvc:", status["message"][:120])


@pytest.mark.asyncio
async def test_a_missing_bucket_says_why_in_a_condition_and_an_event() -> None:
    with S3Server() as s3, tempfile.TemporaryDirectory() as folder:
        s3.create_bucket("models")
        s3.upload_folder("models", "gelu/v1", repository(Path(folder) / "v1", "exact"))
        rollout = s3_rollout("nobucket", s3, "s3://no-such-bucket/gelu/v2")
        async with sandbox() as stack:
            await apply(stack, SECRET)
            await apply(stack, rollout)

            def failing(found: dict[str, Any]) -> bool:
                conditions = (found.get("status") or {}).get("conditions") or []
                return any(c.get("reason") == "PodsFailing" for c in conditions)

            done = await stack.wait_for("nobucket", failing, timeout_s=90)
            resources = condition(done, "ResourcesReady")
            assert resources["status"] == "False"
            assert "candidate pod" in resources["message"]
            assert "CrashLoopBackOff" in resources["message"]
            assert "S3" in resources["message"], resources["message"]
            assert condition(done, "Stalled")["reason"] == "PodsFailing"
            assert done["status"]["stage"] == "Pending"  # no traffic ever moved
            reasons = [e.get("reason") for e in await stack.events("nobucket")]
            assert "PodsFailing" in reasons
            print("E2E missing bucket:", resources["message"][:300])


def two_versions(folder: Path) -> Path:
    """A repository whose model ``plain_gelu`` has versions 1 (exact answers) and 2 (NaN
    answers, by the model's ``nan_in_versions`` parameter), with Triton's default policy: the
    latest version only."""
    model = folder / PLAIN_MODEL
    shutil.copytree(PLAIN_GELU / "1", model / "1")
    shutil.copytree(PLAIN_GELU / "1", model / "2")
    config = (PLAIN_GELU / "config.pbtxt").read_text()
    parameters = 'parameters { key: "nan_in_versions" value: { string_value: "2" } }\n'
    (model / "config.pbtxt").write_text(config + parameters)
    return folder


async def served_versions(stack: Any, service: str) -> dict[int, bool]:
    """Whether each of versions 1 and 2 is ready on the Service's pods."""
    ready = {}
    for version in (1, 2):
        client = triton_http.InferenceServerClient(
            stack.pods.service_endpoints("default", service)[0]
        )
        try:
            ready[version] = await client.is_model_ready(PLAIN_MODEL, str(version))
        finally:
            await client.close()
    return ready


@pytest.mark.asyncio
async def test_each_arm_serves_the_version_it_names_of_one_repository() -> None:
    uri = "pvc://model-store/plain"
    rollout = manifest(
        "versions",
        {"storageUri": uri, "revision": "r1", "version": 2},
        steps=[{"weight": 50, "analysisSeconds": 20}],
    )
    rollout["spec"]["model"]["name"] = PLAIN_MODEL
    rollout["spec"]["baseline"] = {"storageUri": uri, "revision": "r1", "version": 1}
    missing = json.loads(json.dumps(rollout))
    missing["metadata"]["name"] = "noversion"
    missing["spec"]["candidate"]["version"] = 7
    async with sandbox() as stack:
        two_versions(stack.pods.volume_path("default", "model-store") / "plain")
        await apply(stack, rollout)
        done = await stack.wait_for("versions", finished, timeout_s=150)
        status = done["status"]
        # The baseline was reloaded to version 1 (Triton's own policy loads 2), the candidate
        # serves 2, whose NaN answers the probe catches beside the baseline's finite ones.
        assert status["stage"] == "RolledBack", status["message"]
        assert condition(done, "RolledBack")["reason"] == "ProbeFailed"
        # Only version 2 answers NaN: the candidate served it, the baseline did not.
        assert "non-finite output(s) where the baseline's are finite" in status["message"]
        assert await served_versions(stack, "versions-baseline") == {1: True, 2: False}
        # (The candidate is scaled to 0 once the rollback is acted on: nothing left to ask.)
        print("E2E versions:", status["message"][:160])

        await apply(stack, missing)

        def failing(found: dict[str, Any]) -> bool:
            conditions = (found.get("status") or {}).get("conditions") or []
            return any(c.get("reason") == "PodsFailing" for c in conditions)

        stalled = await stack.wait_for("noversion", failing, timeout_s=90)
        resources = condition(stalled, "ResourcesReady")
        assert "candidate pod noversion-candidate-" in resources["message"]
        assert "version 7" in resources["message"], resources["message"]
        assert "version policy" in resources["message"], resources["message"]
        assert stalled["status"]["stage"] == "Pending"
        print("E2E missing version:", resources["message"][:300])
