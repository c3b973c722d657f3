"""Bad and awkward objects through the whole pipeline: each must end classified, or refused
with the status its dead letter carries (415 not an image, 413 too big)."""

from __future__ import annotations

from dataclasses import dataclass

from testkit import samples
from testkit.live_stack import MAX_OBJECT_BYTES, LiveStack
from testkit.scenarios.tally import SETTLE_TIMEOUT

CLASSIFIED = "classified"


@dataclass(frozen=True)
class BadCase:
    key: str
    body: bytes
    expect: str | int  # CLASSIFIED, or the status the dead letter must carry
    # RGW may refuse the upload itself (then the client saw the error and nothing is expected).
    refusal_ok: bool = False


def _long_key(size: int) -> str:
    return f"bad/long{size}-" + "k" * (size - len(f"bad/long{size}-") - len(".jpg")) + ".jpg"


def bad_cases() -> list[BadCase]:
    jpeg = samples.upright_jpeg()
    return [
        BadCase("bad/truncated.jpg", samples.truncated_jpeg(), 415),
        BadCase("bad/shopping-list.jpg", samples.text_as_jpeg(), 415),
        BadCase("bad/bomb-28000x28000.png", samples.png_bomb(28000), 413),
        BadCase("bad/empty.jpg", b"", 415),
        BadCase("bad/over-the-cap.jpg", jpeg + b"\0" * (MAX_OBJECT_BYTES + 1 - len(jpeg)), 413),
        BadCase("bad/greyscale.jpg", samples.greyscale_jpeg(), CLASSIFIED),
        BadCase("bad/cmyk.jpg", samples.cmyk_jpeg(), CLASSIFIED),
        BadCase("bad/animated.gif", samples.animated_gif(), CLASSIFIED),
        BadCase("bad/exif-6.jpg", samples.exif_rotated_jpeg(6), CLASSIFIED),
        BadCase("bad/exif-8.jpg", samples.exif_rotated_jpeg(8), CLASSIFIED),
        BadCase("bad/with space and  two.jpg", jpeg, CLASSIFIED),
        BadCase("bad/plus+sign+.jpg", jpeg, CLASSIFIED),
        BadCase("bad/ünïcødé-猫-🐈.jpg", jpeg, CLASSIFIED),
        BadCase("bad/percent%20%zz%.jpg", jpeg, CLASSIFIED),
        BadCase(_long_key(400), jpeg, CLASSIFIED),
        # S3 allows 1024-byte keys; the local cluster's `osd max object name len = 460`
        # (scripts/rgw-up.sh) makes RGW answer 500 to a PUT of one this long.
        BadCase(_long_key(1000), jpeg, CLASSIFIED, refusal_ok=True),
    ]


@dataclass
class BadOutcome:
    case: BadCase
    uploaded: bool
    got: str | int | None  # CLASSIFIED, a dead letter's status, or None (nothing: lost)
    upload_error: str | None = None
    function: str | None = None  # the classifier that refused it


def bad_input(live: LiveStack, timeout: float = SETTLE_TIMEOUT) -> list[BadOutcome]:
    cases = bad_cases()
    uploads = {u.key: u for u in live.upload_many([(c.key, c.body) for c in cases], writers=4)}
    keys = [k for k, u in uploads.items() if u.acknowledged]
    outcomes = live.wait_settled(keys, timeout)
    found = []
    for case in cases:
        upload = uploads[case.key]
        got: str | int | None = None
        function: str | None = None
        outcome = outcomes.get(case.key)
        if outcome is not None and outcome.classified:
            got = CLASSIFIED
        elif outcome is not None and outcome.dead:
            attributes = outcome.dead[0]["attributes"]
            code = attributes.get("knativeerrorcode")
            got = int(code) if code is not None else "no answer"
            destination = attributes.get("knativeerrordest", "")
            function = next(
                (n for n in live.classifiers if destination.startswith(live.url(n))), None
            )
        found.append(BadOutcome(case, upload.acknowledged, got, upload.error, function))
    return found
