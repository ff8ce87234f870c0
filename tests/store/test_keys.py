"""Image keys for file names that are not valid UTF-8: readable, valid text, and reversible."""

import os

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from gbc.store.keys import is_text, key_from_name, name_from_key, printable

# file name bytes: anything but the separator and NUL, biased towards backslashes, 'x' and
# bytes that are not UTF-8 on their own
names = st.lists(st.one_of(st.sampled_from([b"\\", b"x", b"\xff", b"\xc3", b"\xa9", b"ab", "é".encode()]),
                           st.binary(min_size=1, max_size=3)), min_size=1, max_size=12) \
    .map(b"".join).map(lambda raw: raw.replace(b"/", b"_").replace(b"\0", b"_"))


@given(names)
def test_every_name_gets_a_text_key_that_gives_the_name_back(raw):
    name = os.fsdecode(raw)
    key = key_from_name(name)
    assert is_text(key)
    msgspec.json.decode(msgspec.json.encode(key))  # JSON, LMDB and terminals take it
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        assert os.fsencode(name_from_key(key)) == raw  # lossless
    else:
        assert key == name  # valid UTF-8 names keep their key


@given(names, names)
def test_different_undecodable_names_get_different_keys(a, b):
    def undecodable(raw):
        try:
            raw.decode("utf-8")
            return False
        except UnicodeDecodeError:
            return True

    if a != b and undecodable(a) and undecodable(b):
        assert key_from_name(os.fsdecode(a)) != key_from_name(os.fsdecode(b))


def test_examples():
    assert key_from_name(os.fsdecode(b"bad\xffutf8.jpg")) == "bad\\xffutf8.jpg"
    assert key_from_name(os.fsdecode(b"dir\\sub\xfe.png")) == "dir\\\\sub\\xfe.png"
    assert key_from_name("birds/owl.jpg") == "birds/owl.jpg"
    assert name_from_key("birds/owl.jpg") is None
    assert name_from_key("odd\\xzz.jpg") is None  # a backslash that no escape explains
    assert name_from_key("plain\\x41.jpg") is None  # it would unescape to valid UTF-8: not one of ours
    assert printable("a\udcffb") == "a\\xffb" and printable("fine") == "fine"
