"""``ssmad --version`` prints the package version and exits 0."""

import pytest

import ssmad
from ssmad.cli import main


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"ssmad {ssmad.__version__}"
