"""The one registry behind layer and solver types."""
import pytest

from pycaffe_lite.errors import CaffeError
from pycaffe_lite.registry import Registry


def test_register_aliases_list_and_look_up():
    things = Registry("thing", CaffeError)

    @things.register("Alpha", "ALPHA")
    class Alpha:
        pass

    assert Alpha.type == "Alpha" and things.lookup("ALPHA") is Alpha
    assert things.type_list() == ["Alpha"]                      # aliases left out
    with pytest.raises(RuntimeError, match="thing type 'Alpha' registered twice"):
        things.register("Alpha")(type("Other", (), {}))
    with pytest.raises(CaffeError, match="unknown thing type 'Beta'; known types: Alpha$"):
        things.lookup("Beta")


def test_load_runs_before_the_first_look_up():
    loaded = []
    things = Registry("thing", CaffeError, load=lambda: loaded.append(True))
    assert things.type_list() == [] and loaded
