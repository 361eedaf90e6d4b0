"""Host matching of the virtual-host dispatcher, against nginx's server_name rules."""

from __future__ import annotations

import pytest

from cpsysd.runtime.vhosts import HostTable, host_name


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("Example.ORG", "example.org"),
        ("example.org:8080", "example.org"),
        ("example.org.", "example.org"),
        ("[::1]:8080", "[::1]"),
        ("[::1]", "[::1]"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("", ""),
    ],
)
def test_host_name(header: str, host: str) -> None:
    assert host_name(header) == host


TABLE = HostTable(
    [
        ("example.org", "/"),
        ("blog.example.org", "/blog/"),
        ("*.example.org", "/sites"),
        ("*.shop.example.org", "/shop"),
    ]
)


@pytest.mark.parametrize(
    ("header", "prefix"),
    [
        ("example.org", ""),  # "/" means the root: no prefix
        ("blog.example.org", "/blog"),  # exact beats the wildcard
        ("Blog.Example.Org:443", "/blog"),
        ("news.example.org", "/sites"),
        ("a.b.example.org", "/sites"),
        ("x.shop.example.org", "/shop"),  # the longest wildcard
        ("shop.example.org", "/sites"),  # *.shop.example.org needs a label before it
        ("example.org.evil", ""),
        ("notexample.org", ""),  # a suffix, but not at a label boundary
        ("", ""),
    ],
)
def test_prefix_for(header: str, prefix: str) -> None:
    assert TABLE.prefix_for(header) == prefix
