"""The command as typed in the page: one line is split like shell words (never run by a shell),
several lines are one argument each, and shell syntax is refused with how to get a shell."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from apps.console.models import ExecSession
from apps.console.services import _not_started, argv_from_text


def test_one_line_is_split_into_words_with_quotes_kept_together() -> None:
    assert argv_from_text("cat /proc/meminfo") == ["cat", "/proc/meminfo"]
    assert argv_from_text("grep -r 'two words' /srv/app\n") == ["grep", "-r", "two words", "/srv/app"]


def test_several_lines_are_one_argument_each_as_before() -> None:
    assert argv_from_text("sh\n-c\necho $((6*7)); exit 4") == ["sh", "-c", "echo $((6*7)); exit 4"]
    assert argv_from_text("echo\r\n\r\nb\n") == ["echo", "", "b"]
    assert argv_from_text("  \n") == []


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("cat /proc/meminfo | head", "No shell runs the command, so “|” would reach cat as an argument"),
        ("ls > /tmp/x", "“>” would reach ls"),
        ("echo $(hostname)", "“$(hostname)” would reach echo"),
        ("echo 'unclosed", "cannot be split into arguments"),
    ],
)
def test_shell_syntax_and_broken_quotes_are_refused_with_what_to_do(typed: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        argv_from_text(typed)
    text = " ".join(caught.value.message_dict["argv"])
    assert message in text
    if "No shell" in text:
        assert "sh -c " in text


def test_a_whole_command_in_one_argument_is_explained_not_shown_as_a_runtime_error() -> None:
    session = ExecSession(argv=["cat /proc/meminfo"])
    oci = b'OCI runtime exec failed: exec failed: unable to start container process: exec: "cat /proc/meminfo": executable file not found in $PATH: unknown'
    why = _not_started(session, 126, oci)
    assert why.startswith("“cat /proc/meminfo” is not a program in the container (exit code 126).")
    assert "one argument per line" in why
    assert _not_started(ExecSession(argv=["nope"]), 127, oci).endswith("give its full path.")
    assert _not_started(ExecSession(argv=["false"]), 1, b"") == ""
