"""The Vision stand-in's SafeSearch: open_nsfw's nsfw probability as the API's Likelihood enum.

open_nsfw scores one thing, how likely an image is not safe for work, so it answers two of the
five SafeSearch categories, `adult` and `racy`, both from that one score. It says nothing about
`spoof`, `medical` or `violence`: those are UNKNOWN ("Unknown likelihood"), not VERY_UNLIKELY,
which would be a claim the model cannot make.

The score is cut into five equal bands. Yahoo's open_nsfw documentation reads scores below 0.2 as
safe with high probability and above 0.8 as NSFW with high probability, which are the two outer
bands (and COMPLIANCE_THRESHOLD's default, 0.8, is where VERY_LIKELY begins):

    nsfw score  [0, 0.2)       [0.2, 0.4)  [0.4, 0.6)  [0.6, 0.8)  [0.8, 1]
    likelihood  VERY_UNLIKELY  UNLIKELY    POSSIBLE    LIKELY      VERY_LIKELY

As the REST API writes proto3 JSON, a field at its default (UNKNOWN) is left out of the answer.
"""

from __future__ import annotations

from common.vision_messages import LIKELIHOODS

# Lower bound of each band, from VERY_UNLIKELY (LIKELIHOODS[1]) to VERY_LIKELY (LIKELIHOODS[5]).
BAND_FLOORS = (0.0, 0.2, 0.4, 0.6, 0.8)
SCORED_CATEGORIES = ("adult", "racy")


def likelihood(nsfw_score: float) -> str:
    """The Likelihood name for an nsfw probability in 0..1 (out of range clamps to the ends)."""
    band = sum(1 for floor in BAND_FLOORS[1:] if nsfw_score >= floor)
    return LIKELIHOODS[1 + band]


def safe_search_annotation(nsfw_score: float) -> dict[str, str]:
    """`safeSearchAnnotation` as the REST API writes it: the scored categories only (the other
    three are UNKNOWN, the enum's default, which proto3 JSON omits)."""
    value = likelihood(nsfw_score)
    return {category: value for category in SCORED_CATEGORIES}
