"""Why an arm's pods do not run, read from their status."""

from __future__ import annotations

from typing import Any

from gelu_rollout.resources.pod_status import pod_problem, pod_problems


def pod(name: str, **container: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"gelu.dev/arm": "candidate"}},
        "status": {"containerStatuses": [{"name": "tritonserver", **container}]},
    }


def test_a_crash_loop_says_the_end_of_the_servers_log() -> None:
    crashing = pod(
        "r-candidate-1",
        restartCount=3,
        state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
        lastState={
            "terminated": {
                "exitCode": 1,
                "message": "I1201 starting\nE1201 failed to load 'gelu': no such bucket\n| table |",
            }
        },
    )
    problem = pod_problem(crashing)
    assert problem == (
        "candidate pod r-candidate-1: CrashLoopBackOff after 3 restart(s): "
        "E1201 failed to load 'gelu': no such bucket"
    )


def test_a_container_that_cannot_be_set_up_says_why() -> None:
    waiting = pod(
        "r-candidate-2",
        state={
            "waiting": {
                "reason": "CreateContainerConfigError",
                "message": 'secret "s3" not found',
            }
        },
    )
    assert pod_problem(waiting) == (
        'candidate pod r-candidate-2: CreateContainerConfigError: secret "s3" not found'
    )


def test_starting_and_running_pods_are_not_problems() -> None:
    starting = pod("a", state={"waiting": {"reason": "ContainerCreating"}})
    running = pod("b", state={"running": {}})
    assert pod_problems([starting, running, {"metadata": {"name": "c"}}]) == []
