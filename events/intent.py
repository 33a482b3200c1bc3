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

# Where a sentence (or a clause) starts, also after an @handle: an inverted modal there is a
# question to the reader, while "why would you ..." or "... will you be able to" is not.
_CLAUSE = (
    r"""(?:^|[.!?;:,(\[*>"\n]\s*|@[\w.]+\s+|\b(?:so|and|but|also|hey|ok|okay|then|pls|please)\s+)"""
)

_ASK = re.compile(
    _CLAUSE
    + r"""(?:could|can|would|will)\s+(?:you|u|someone|anyone|somebody|y'all)\b   # Can you ...?
    | \bwould\s+you\s+mind\b
    | \bplease\s+(?:share|retweet|rt|repost|boost|like|follow|help|send|check|review|vote|sign|
                   subscribe|donate|intro|introduce|dm|email|call|let\s+(?:me|us)\s+know|advise|
                   explain|tell|link|post|reply|respond|contact|reach\s+out|consider|message|
                   read|include|submit|verify|fill|add)\b
    | \b(?:can|could)\s+(?:you\s+)?intro(?:duce)?\b
    | \bany\s+(?:advice|help|tips|suggestions|recommendations|ideas|pointers)\b   # Any tips?
         (?=[^.!?\n]{0,60}\?|\s*(?:would|is\s+appreciated|appreciated|welcome|please))
    | \b(?:i|we)(?:\s+(?:really\s+)?(?:need|want|would\s+like)|'d\s+(?:really\s+)?like)\s+
         (?:your|some|a|an)?\s*(?:help|advice|feedback|intro|introduction|favou?r|input)\b
    | \b(?:i|we)(?:\s+would|'d)\s+(?:love|appreciate)\s+(?:it\s+if|your|some|a|an|any)\b
    | \bdoes\s+(?:anyone|anybody|someone)\b
    | \b(?:is|are)\s+there\s+(?:any|a)\s+way\b
    | \bhow\s+(?:do|should)\s+(?:i|we)\b
    | \bhow\s+can\s+(?:i|we)\s+(?!ever\b)                                       # not rhetorical
    | \bcan\s+(?:i|we)\s+(?:ask|get|have|borrow)\b
    | \blooking\s+for\s+(?:help|advice|feedback|recommendations|a\s+recommendation|
                         an?\s+intro(?:duction)?)\b
    """,
    re.IGNORECASE | re.VERBOSE,
)
_THANKS = re.compile(
    r"""
    \bthanks\b(?!\s+to\b(?![^.!?,;\n]{0,80}\bfor\b))  # not "thanks to X" (= because of X) ...
                                                      # ... unless "thanks to X for ..."
    | \b(?:thank\s+(?:you|u|y'all)|thankyou|thx|ty|cheers|
           (?:much|most|greatly|really|very|truly|so)\s+appreciated)\b
    | (?<!would\s)(?<!'d\s)\bappreciate\s+(?:it|you|that|this|the|your|all)\b  # not "you'd ..."
    | (?:^|[.!?]\s*)appreciated\b                              # "Appreciated!"
    """,
    re.IGNORECASE | re.VERBOSE,
)
_GREETING = re.compile(
    r"^\W*(?:hi|hello|hey|hiya|howdy|good\s+(?:morning|afternoon|evening)|greetings|yo)\b",
    re.IGNORECASE,
)
_GIVE = re.compile(
    _CLAUSE
    + r"""(?:well\s+)?here(?:'s|\s+is|\s+are)\b          # "Here's a video", not "X here are"
    | \b(?:check\s+out|you\s+might\s+(?:like|find|enjoy)|sharing\s+this|fyi|
           for\s+what\s+it's\s+worth|happy\s+to\s+help|glad\s+to\s+help|congrat(?:s|ulations)|
           well\s+done|great\s+(?:job|work|post))\b
    | \b(?:i|we)(?:\s+would|'d)?\s+recommend\b
    | \b(?:may\s+i|(?:i|we)(?:\s+would|'d)?)\s+suggest\b
    | (?<!n't\s)(?<!not\s)\btry\s+this\b                       # not "don't try this"
    | \byou\s+(?:should|could|might\s+want\s+to)\s+(?:try|use|check|read|watch|look\s+at|
                                                  install)\b
    | \b(?:thought|think)\s+you(?:\s+guys|\s+all)?\s+(?:would|might|'d)\s+(?:like|enjoy|
                                                                        appreciate)\b
    | \blet\s+(?:me|us)\s+know\s+if\s+you\s+need\b
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
    text = text.replace("\u2019", "'")  # typographic apostrophes
    if _ASK.search(text):
        return "ask"
    if _THANKS.search(text):
        return "thanks"
    if _GIVE.search(text):
        return "give"
    if _GREETING.search(text) and len(text.split()) <= _GREETING_ONLY_MAX_WORDS:
        return "greeting"
    return "neutral"
