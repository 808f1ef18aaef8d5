"""The demo's cast and where each channel pushes (pure)."""

import pytest

from workers.stack.demo import DEMO_CHANNEL, DEMO_CREATOR, channel_urls, demo_cast


def test_one_channel_is_the_classic_demo():
    (ava,) = demo_cast(1)
    assert (ava.creator, ava.channel, ava.seed) == (DEMO_CREATOR, DEMO_CHANNEL, 7)


@pytest.mark.parametrize("n", [3, 8, 12])
def test_each_channel_has_its_own_creator_face_and_name(n):
    cast = demo_cast(n)
    assert len({m.creator for m in cast}) == n and len({m.seed for m in cast}) == n
    assert len({m.channel for m in cast}) == n
    assert all("not a real person" in m.creator for m in cast)


def test_channel_n_pushes_to_url_n():
    urls = ["rtmp://a.example/live/show", "rtmps://b.example/app/key"]
    assert channel_urls(urls, 0, 1) == urls
    assert channel_urls(urls, 0, 3) == ["rtmp://a.example/live/show-1", "rtmps://b.example/app/key-1"]
    assert channel_urls(urls, 2, 3) == ["rtmp://a.example/live/show-3", "rtmps://b.example/app/key-3"]
    assert channel_urls([], 1, 3) == []
