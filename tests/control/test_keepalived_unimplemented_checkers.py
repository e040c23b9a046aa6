"""keepalived's checkers that userlb does not implement are refused by name,
with the file and line of the checker block (docs/keepalived.md,
"Keywords"), wherever they appear and whatever they contain."""
import pytest

from userlb.control.keepalived import load_text
from userlb.control.keepalived_parse import KeepalivedError

UNIMPLEMENTED = ("SMTP_CHECK", "FILE_CHECK", "BFD_CHECK")


@pytest.mark.parametrize("kind", UNIMPLEMENTED)
@pytest.mark.parametrize("body", ["", "   connect_timeout 3\n", "   retry 2\n   delay_loop 5\n"])
def test_unimplemented_checker_refused_by_name_with_line(kind, body):
    conf = ("! a comment\nvirtual_server 10.0.0.1 80 {\n lb_algo rr\n protocol TCP\n"
            " real_server 10.0.0.2 80 {\n  TCP_CHECK {\n  }\n"
            f"  {kind} {{\n{body}  }}\n }}\n}}\n")
    with pytest.raises(KeepalivedError) as ei:
        load_text(conf, "k.conf")
    e = ei.value
    assert (e.file, e.line) == ("k.conf", 8), str(e)
    assert f"{kind} is not implemented by userlb" in e.message
    assert str(e).startswith("k.conf:8: ")


@pytest.mark.parametrize("kind", UNIMPLEMENTED)
def test_unimplemented_checker_in_second_real_server(kind):
    conf = ("virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n }\n"
            f" real_server 10.0.0.3 80 {{\n  {kind} {{\n  }}\n }}\n}}\n")
    with pytest.raises(KeepalivedError) as ei:
        load_text(conf, "k.conf")
    assert str(ei.value).startswith(f"k.conf:5: {kind} is not implemented")
