"""How a dead container is described, including the moment between two crashes.

Docker shows a crash-looping container as running with exit code 0 for a moment after each
restart; the real engine cannot be held at that moment on demand, so its inspect answer is given.
"""

from typing import Any

from apps.hosts.transport.docker_api.containers import _death_of, _state_of


class _Api:
    def __init__(self, logs: bytes) -> None:
        self._logs = logs

    def logs(self, container_id: str, tail: int) -> bytes:
        return self._logs


def _describe(state: dict[str, Any], restarts: int) -> str:
    info = {"Id": "c1", "Name": "/slw-shop-0", "State": state, "RestartCount": restarts}
    return _death_of(_Api(b"config missing\n"), "c1", _state_of(info, None))


def test_a_container_that_exited_once_names_its_exit_code() -> None:
    assert _describe({"Status": "exited", "ExitCode": 3}, 0) == "exited with code 3: config missing"


def test_a_container_caught_between_restarts_is_crash_looping_not_exit_code_zero() -> None:
    text = _describe({"Status": "running", "ExitCode": 0}, 4)
    assert text == "keeps crashing (restarted 4 times): config missing"


def test_a_restarting_container_keeps_its_last_exit_code() -> None:
    text = _describe({"Status": "restarting", "ExitCode": 3}, 2)
    assert text == "keeps crashing (restarted 2 times, last exit code 3): config missing"
