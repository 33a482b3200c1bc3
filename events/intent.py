"""Intent: give, ask, thanks, greeting or neutral, by a deterministic, versioned rule set.

Structural kinds map directly (a share, a reaction or an introduction gives); text decides the
rest: an explicit request is an ask, gratitude is thanks, a bare hello is a greeting.
Change the rules only together with `RULES_VERSION`: it is stored on every event.
"""

from __future__ import annotations

import re

from events.models import Kind

RULES_VERSION = "intent-v1"

STRUCTURAL: dict[Kind, str] = {
    Kind.SHARE: "give",
    Kind.REACTION: "give",
    Kind.INTRODUCTION: "give",
    Kind.FOLLOW: "give",
    Kind.UNFOLLOW: "neutral",
}

_ASK = re.compile(
    r"""
    \b(?:could|can|would|will)\s+(?:you|u|someone|anyone|somebody)\b   # could you / can anyone
    | \bplease\s+(?:share|retweet|rt|repost|boost|like|follow|help|send|check|review|vote|sign|
                   subscribe|donate|intro|introduce|dm|email|call|let\s+me\s+know|advise|explain)\b
    | \b(?:can|could)\s+(?:you\s+)?intro(?:duce)?\b
    | \b(?:any|some)\s+(?:advice|help|tips|suggestions|recommendations|ideas)\b
    | \b(?:i|we)\s+(?:need|want|would\s+like|'d\s+like|d\s+like)\s+(?:your|some|a|an)?\s*
         (?:help|advice|feedback|intro|introduction|favor|favour)\b
    | \bdoes\s+(?:anyone|anybody|someone)\b
    | \b(?:is|are)\s+there\s+(?:any|a)\s+way\b
    | \bhow\s+(?:do|can|should|would)\s+(?:i|we)\b
    | \bmind\s+(?:sharing|helping|retweeting|checking)\b
    | \blooking\s+for\s+(?:help|advice|recommendations|a\s+recommendation)\b
    """,
    re.IGNORECASE | re.VERBOSE,
)
_THANKS = re.compile(
    r"\b(?:thanks|thank\s+you|thank\s+u|thx|ty|cheers|much\s+appreciated|appreciate\s+(?:it|you|that))\b",
    re.IGNORECASE,
)
_GREETING = re.compile(
    r"^\W*(?:hi|hello|hey|hiya|howdy|good\s+(?:morning|afternoon|evening)|greetings|yo)\b",
    re.IGNORECASE,
)
_GIVE = re.compile(
    r"""
    \b(?:here(?:'s|\s+is|\s+are)|check\s+out|you\s+might\s+(?:like|find)|i\s+recommend|
         i'd\s+recommend|i\s+would\s+recommend|try\s+this|sharing\s+this|fyi|for\s+what\s+it's\s+worth|
         happy\s+to\s+help|glad\s+to\s+help|congrat(?:s|ulations)|well\s+done|great\s+(?:job|work|post))\b
    """,
    re.IGNORECASE | re.VERBOSE,
)
_GREETING_ONLY_MAX_WORDS = 6


def classify_intent(kind: Kind, text: str | None) -> str:
    """The intent of one interaction; the same inputs always give the same answer."""
    structural = STRUCTURAL.get(kind)
    if structural is not None:
        return structural
    if not text:
        return "neutral"
    if _ASK.search(text):
        return "ask"
    if _THANKS.search(text):
        return "thanks"
    if _GIVE.search(text):
        return "give"
    if _GREETING.search(text) and len(text.split()) <= _GREETING_ONLY_MAX_WORDS:
        return "greeting"
    return "neutral"
