"""Guest names -> names that are safe to create at the destination."""

from __future__ import annotations

import pytest

from recovery.itemlevel.names import MAX_NAME_BYTES, NameRegistry, NameStyle, encoded_len, safe_name

POSIX, WINDOWS = NameStyle.POSIX, NameStyle.WINDOWS

HOSTILE = [
    "..",
    ".",
    "",
    "../x",
    "../../etc/passwd",
    "..\\..\\x",
    "/etc/passwd",
    "C:\\Windows\\x",
    "C:x",
    "a/b",
    "a\\b",
    "nul\0inside",
    "\0",
    "ctl\x01\x1f\x7f",
    "\\\\server\\share\\x",
]


@pytest.mark.parametrize("style", [POSIX, WINDOWS])
@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_become_one_harmless_component(name: str, style: NameStyle) -> None:
    safe = safe_name(name, style)
    assert safe.name not in ("", ".", "..")
    assert "/" not in safe.name and "\0" not in safe.name and "\\" not in safe.name
    assert not any(ord(c) < 32 or ord(c) == 127 for c in safe.name)
    assert encoded_len(safe.name) <= MAX_NAME_BYTES
    if safe.name != name:
        assert safe.changed and safe.reasons and safe.note().startswith("saved as")


def test_examples() -> None:
    assert safe_name("..").name == "__"
    assert safe_name(".").name == "_"
    assert safe_name("../x").name == ".._x"
    assert safe_name("a\\b").name == "a_b"
    assert safe_name("nul\0byte").name == "nul_byte"
    assert safe_name("C:\\pwned").name == "C:_pwned"  # ':' is fine on Linux
    assert safe_name("C:\\pwned", WINDOWS).name == "C__pwned"


def test_normal_names_are_kept() -> None:
    for name in ["readme.txt", "résumé - ünïcødé ☃.txt", "...", ".bashrc", "a b", "CON.txt", "x:y"]:
        safe = safe_name(name)
        assert safe.name == name and not safe.changed and safe.note() == ""


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("CON", "_CON"),
        ("con", "_con"),
        ("Aux.txt", "_Aux.txt"),
        ("NUL.tar.gz", "_NUL.tar.gz"),
        ("COM1", "_COM1"),
        ("LPT9.log", "_LPT9.log"),
        ("COM10", "COM10"),
        ("CONSOLE", "CONSOLE"),
        ("trail.", "trail_"),
        ("trail ", "trail_"),
        ("dots...", "dots___"),
        ('e<f>|?*"', "e_f_____"),
        ("a:b", "a_b"),
    ],
)
def test_windows_rules(name: str, expected: str) -> None:
    safe = safe_name(name, WINDOWS)
    assert safe.name == expected
    assert safe.changed == (name != expected)


def test_windows_rules_do_not_apply_to_posix() -> None:
    for name in ["CON", "trail.", "trail ", 'e<f>|?*"', "a:b"]:
        assert safe_name(name, POSIX).name == name


def test_long_names_are_shortened_deterministically_keeping_the_extension() -> None:
    long = "é" * 200 + ".txt"  # 404 bytes of UTF-8
    a, b = safe_name(long), safe_name(long)
    assert a.name == b.name
    assert a.name.endswith(".txt") and "~" in a.name
    assert encoded_len(a.name) <= MAX_NAME_BYTES
    assert any("longer than 255 bytes" in r for r in a.reasons)
    other = safe_name("é" * 199 + "x.txt")
    assert other.name != a.name  # the hash keeps different originals apart
    # 255 bytes exactly is fine
    fits = "a" * 251 + ".txt"
    assert safe_name(fits).name == fits
    # a huge extension is not kept, but the result still fits
    odd = "x." + "y" * 300
    assert encoded_len(safe_name(odd).name) <= MAX_NAME_BYTES


def test_undecodable_bytes_round_trip_on_posix_only() -> None:
    name = b"latin\xe9.txt".decode("utf-8", "surrogateescape")
    assert safe_name(name, POSIX).name == name  # written back as the original bytes
    win = safe_name(name, WINDOWS)
    assert win.name == "latin_.txt" and any("Unicode" in r for r in win.reasons)
    lone = "bad\ud800x"  # a lone UTF-16 surrogate from NTFS: writable nowhere
    assert safe_name(lone, POSIX).name == "bad_x"


def test_registry_keeps_clashing_names_apart() -> None:
    reg = NameRegistry(WINDOWS)
    first = reg.claim(safe_name("a:b", WINDOWS))
    second = reg.claim(safe_name("a?b", WINDOWS))
    assert first.name == "a_b"
    assert second.name == "a_b~2" and any("clashes" in r for r in second.reasons)
    upper = reg.claim(safe_name("Case.txt", WINDOWS))
    lower = reg.claim(safe_name("case.txt", WINDOWS))
    assert upper.name == "Case.txt" and lower.name == "case~2.txt"
    assert reg.claim(safe_name("a?b", WINDOWS)).name == "a_b~2"  # asking again gives the same name
    posix = NameRegistry(POSIX)
    assert posix.claim(safe_name("Case.txt")).name == "Case.txt"
    assert posix.claim(safe_name("case.txt")).name == "case.txt"


def test_variant_of_a_maximal_name_still_fits() -> None:
    reg = NameRegistry(POSIX)
    name = "a" * 251 + ".txt"
    reg.claim(safe_name(name))
    v = reg.variant(safe_name(name), "taken")
    assert v.name != name and encoded_len(v.name) <= MAX_NAME_BYTES and v.name.endswith(".txt")
