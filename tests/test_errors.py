"""The exception family: every user error is an ElfcoreError."""
import pytest

from elfcore.errors import ElfcoreError, SettingsError


def test_settings_error_is_both_elfcore_error_and_value_error():
    with pytest.raises(ElfcoreError, match="l_max=-1"):
        raise SettingsError("l_max=-1; must be ≥ 0")
    with pytest.raises(ValueError):
        raise SettingsError("l_max=-1; must be ≥ 0")
