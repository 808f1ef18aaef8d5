"""One-time code phrases for consent videos (POLICY C2). Pure: no I/O, no clock; the caller passes `now`.

The platform issues a phrase of random words, valid for a few minutes; the creator reads it aloud in the
consent video, which shows that the video was recorded for this grant and not reused from elsewhere.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# WORDS: two- and three-syllable common English words, each in pocketsphinx's en-us dictionary, at least
# three phonemes apart from every other word (edit distance over every pronunciation the dictionary
# lists), so that a recogniser confuses them rarely. Chosen from 304 such candidates as the 256 that
# pocketsphinx recognised best in espeak-ng readings (voices en-us, en-gb, en+f3, en-us+m3).
WORDS: tuple[str, ...] = tuple("""
acorn airport alpine angel antler apron attic autumn ballet bamboo banana banjo beaver bicycle bison blanket blender
blizzard blossom bookcase bowling bracelet broccoli brother brownie buffalo bullet cactus camera camping candy canoe
cargo carpet cartoon cement chapel cheetah chestnut chicken chimney cinema circus citrus clover cobbler cobweb
coconut compass cottage country cowboy cradle crayon crocus crystal daisy dancer dentist dinosaur doctor domino
donkey eagle elbow emerald evening fabric factory falcon family finger fireman fishing flamingo flannel football
forehead forest freckle freezer frozen galaxy garage garbage gasoline gecko giant ginger giraffe glacier goblin
golden gorilla grandma gravel guitar gumbo hamster harbor harvest hazard hedgehog highway hippo holiday horizon
hospital hunter husky iceberg igloo insect iron island jigsaw juggler kayak ketchup kiwi ladder ladybug lagoon
laptop laundry lemonade lentil lily lipstick lobster locket magnet mallet mammoth melon menu mercury meteor midnight
mirror monsoon morning mosaic mountain mural mushroom music mustard nacho necklace noodle nugget oasis oatmeal ocean
octopus office olive onion orange orca oyster pajamas pancake papaya parade parking pasta peacock penguin perfume
piano picnic pilgrim pirate plastic police pony popcorn postcard potato pumpkin pupil pyramid python radish railway
raincoat raven recipe rescue rhino robot ruby sandal sandwich seashell season secret shovel signal silver skeleton
skylight slipper snorkel sofa spider spinach squirrel stable student subway sugar summer sunrise sunset teapot tempo
thimble timber toolbox tornado tower tractor traffic treasure trophy trumpet tundra turkey turtle tuxedo tycoon
umbrella uncle unicorn uniform vacuum vanilla vessel video viking village violin volcano vulture waffle wagon walrus
weather wedding wigwam window yogurt zombie
""".split())

MIN_WORDS, MAX_WORDS = 3, 12


@dataclass(frozen=True)
class CodePhrase:
    """A phrase to read aloud: `text` is the words joined by spaces. Times are naive UTC."""

    id: str
    text: str
    words: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime


def _utc(value: datetime, name: str) -> datetime:
    """Naive UTC, as the models store it; an aware datetime is converted, so both kinds compare safely."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__} {value!r}")
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value


def issue_phrase(*, now: datetime, rng: random.Random | None = None, words: int = 4,
                 valid_seconds: int = 600) -> CodePhrase:
    """A new phrase of `words` distinct words from WORDS, valid from `now` for `valid_seconds`.

    Randomness comes from `secrets` unless `rng` is given (tests pass a seeded `random.Random`)."""
    if not MIN_WORDS <= words <= MAX_WORDS:
        raise ValueError(f"words must be between {MIN_WORDS} and {MAX_WORDS}, got {words}")
    if valid_seconds <= 0:
        raise ValueError(f"valid_seconds must be > 0, got {valid_seconds}")
    now = _utc(now, "now")
    rng = rng if rng is not None else secrets.SystemRandom()
    chosen = tuple(rng.sample(WORDS, words))
    phrase_id = f"cp-{rng.getrandbits(64):016x}"
    return CodePhrase(id=phrase_id, text=" ".join(chosen), words=chosen, issued_at=now,
                      expires_at=now + timedelta(seconds=valid_seconds))


def open_phrases_problem(expiries: list[datetime], *, limit: int, now: datetime) -> tuple[str, float] | None:
    """Why one more phrase may not be issued to a creator whose issued, unused phrases expire at `expiries`: the
    message and the seconds until the first of them expires (when one may be asked again), or None.

    A phrase costs nothing to ask for but holds a one-time chance at the check; the limit keeps a client from
    hoarding them."""
    now = _utc(now, "now")
    open_ = sorted(e for e in (_utc(x, "expires_at") for x in expiries) if e > now)
    if len(open_) < limit:
        return None
    wait = (open_[0] - now).total_seconds()
    return (f"{len(open_)} code phrases issued to this creator are still open (issued, unused, unexpired); the limit "
            f"is {limit} (setting consent.max_open_phrases): record the consent video with one of them, or ask "
            f"again after {open_[0].isoformat(timespec='seconds')} UTC ({wait:.0f} s), when the first expires"), wait


def phrase_problem(phrase: CodePhrase, *, now: datetime) -> str | None:
    """Why `phrase` cannot be used at `now`, or None when it can."""
    now = _utc(now, "now")
    if now >= phrase.expires_at:
        return (f"code phrase {phrase.id} expired at {phrase.expires_at.isoformat()} UTC "
                f"({(now - phrase.expires_at).total_seconds():.0f} s ago); ask for a new phrase")
    if now < phrase.issued_at:
        return (f"code phrase {phrase.id} is issued at {phrase.issued_at.isoformat()} UTC, after "
                f"{now.isoformat()}: check the clock")
    return None
