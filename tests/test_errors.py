"""facial_emotion.errors: a missing extra is named in one line with the command that installs it."""

import pytest

from facial_emotion.errors import UserError, require_extra


def test_a_missing_extra_is_one_line_naming_the_extra():
    with pytest.raises(UserError) as raised:
        require_extra("no_such_module_here", "--ray", "ray")
    assert str(raised.value) == ('--ray needs no_such_module_here, which is not installed: '
                                 'pip install "facial-emotion[ray]"')


def test_an_installed_module_passes():
    assert require_extra("json", "anything", "none") is None


def test_an_error_s_first_line_or_its_type_when_it_says_nothing():
    from facial_emotion.errors import first_line

    assert first_line(ValueError("  bad shape\n  at line 3 ")) == "bad shape"
    assert first_line(ValueError("x" * 300)) == "x" * 200
    assert first_line(ValueError()) == "ValueError" and first_line(OSError("  ")) == "OSError"


def test_emit_writes_the_line_to_the_stream_it_is_given(capsys):
    import io

    from facial_emotion.errors import emit

    stream = io.StringIO()
    emit("one line", stream)
    assert stream.getvalue() == "one line\n" and capsys.readouterr().out == ""
