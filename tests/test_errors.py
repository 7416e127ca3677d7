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
