"""Facts and observations in everyday dialogue, found by rules (no model): what a speaker says
about themselves — events, plans, ongoing activities, preferences, possessions, identities —
with the date an event happened resolved from the turn's own time.

``extract_dialogue_facts(text, speaker, at)`` reads each declarative sentence (questions are
skipped), splits it into clauses, and keeps clauses whose subject is the speaker: ``I``, ``we``
(both resolved to the speaker's name: a conversation is between its speakers) or ``my/our <kin
or pet>`` (-> "Melanie's kids"). A clause becomes one ``Statement`` of a ``kind``:

=============  ==========================================  ===============================================
kind           shape                                        predicate / object
=============  ==========================================  ===============================================
``event``      ``I went to X yesterday``, ``we ran a race``  ``went to X on 2023-05-07`` / ``2023-05-07``
``plan``       ``I'm going to|planning to|gonna|will X``     ``plans to X`` / target date or ``open``
``activity``   ``I'm researching X``, ``I've been Xing``     ``is researching X`` / ``ongoing``
``preference`` ``I love|like|enjoy|hate X``, ``I'm into X``  ``feels about X`` / ``loves``, ``dislikes``...
``has``        ``I have a X``, ``I've got two X``            ``has a X`` / ``yes``
``identity``   ``I'm a X`` (a noun phrase)                   ``is a X`` / ``yes``
=============  ==========================================  ===============================================

The predicate carries what the fact is about and the object what may change about it, so the
consolidation rules (one current fact per subject+predicate, a newer one superseding it) mean
the right thing: a change of feeling about X supersedes the old one (``loves`` -> ``dislikes``),
while two events, or two things liked, are two facts. An event's ``valid_from`` is the day it
happened (``yesterday``, ``last week``, ``last Saturday``, ``two days ago``... counted back from
``at``; ``at`` itself when no time is said); ``I don't like X anymore`` / ``I no longer X``
retracts the matching preference or activity.

Filler and feelings about the conversation itself ("I'm sure", "I think", "I feel", "I'm so
happy for you", "I know") are not facts; objects are cut at the end of the clause and at most
``MAX_WORDS`` words (a longer clause is kept cut at a word boundary, never dropped); pronoun-only
objects ("it", "that") are dropped. English only.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from domain.memory.consolidation import split_sentences
from domain.memory.extraction import Statement

__all__ = ["MAX_WORDS", "extract_dialogue_facts", "resolve_when"]

MAX_WORDS = 10

_FILLER = (
    r"(?:(?:yeah|yes|yep|oh|wow|well|so|also|plus|and|but|actually|honestly|anyway|btw|by the way|ha|haha|"
    r"hey|hi|lol|ok|okay|cool|thanks|thank you|sure|totally|definitely|really|just|recently|lately|"
    r"last \w+|this \w+|yesterday|today|and then|then|now|finally|guess what|you know)\b[,!.]?\s*)*"
)
_SUBJECT = re.compile(
    r"^" + _FILLER + r"(?P<subj>i|we|my (?P<kin>\w+)|our (?P<okin>\w+))(?P<aux>'m|'ve|'ll|'d|'re| am| are| have| had| will| was| were)?\s+(?P<rest>.+)$",
    re.IGNORECASE,
)
_KIN = frozenset(
    ["kids", "children", "son", "sons", "daughter", "daughters", "husband", "wife", "partner", "family", "mom", "mum", "mother", "dad", "father", "parents", "sister", "sisters", "brother", "brothers", "grandma", "grandpa", "grandmother", "grandfather", "dog", "dogs", "cat", "cats", "pet", "pets", "puppy", "kitten", "baby", "team", "friends", "boyfriend", "girlfriend", "fiance", "fiancee"]
)
_CLAUSE_SPLIT = re.compile(r"\s*(?:;|,?\s+-\s+|\s+[–—]\s+|,\s*(?:and|but|so|because)\s+|\s+(?:but|so|because)\s+|\s+and\s+(?=(?:i|we|my|our)\b))", re.IGNORECASE)
_END = re.compile(
    r"\s+(?:and|but|because|'cause|cause|cuz|coz|since|so|which|while|though|although|if|when|where|who|that's|it's|i|we|i'm|we're"
    r"|in hopes?|in order|hoping)\b.*$"
    r"|[,:!?.(].*$",
    re.IGNORECASE,
)
# mental and conversational verbs: not facts about the speaker's life
_NOT_FACT = re.compile(
    r"^(?:(?:really |so |totally |definitely |also |just |still |truly )*)(?:think|thought|guess|guessed|know|knew|mean|meant|hope|hoped|feel|felt|"
    r"believe|believed|wish|wonder|wondered|bet|agree|agreed|appreciate|appreciated|understand|understood|"
    r"can't wait|cannot wait|can|could|would|should|must|might|may|need to|have to|had to|got to|gotta|"
    r"sure|glad|happy|so happy|thrilled|excited|proud|sorry|grateful|thankful|here|there|with you|not|totally|"
    r"always|never|doing|good|fine|great|okay|ok|in|on|all|hearing|loving it|down|up for|gonna keep|"
    r"see|saw|remember|said|say|told|tell|get|got it|love that|love it|love this|like that|like it|like this|"
    r"love you|love your|like your|love how|love the way|love hearing|love seeing)\b",
    re.IGNORECASE,
)
_PREF = re.compile(
    r"^(?:(?:really|also|just|totally|absolutely|still|truly|do|especially) )*(?P<verb>love|loves|adore|like|enjoy|hate|dislike|prefer|can't stand)s?\s+(?P<obj>.+)$",
    re.IGNORECASE,
)
_PREF_BE = re.compile(
    r"^(?:(?:really|also|so|totally|very|super|still) )*(?P<verb>passionate about|into|a (?:big |huge )?fan of|obsessed with|crazy about|fond of|not a fan of)\s+(?P<obj>.+)$",
    re.IGNORECASE,
)
_PREF_NEG = re.compile(r"^(?:don't|do not|no longer|stopped|don't really) (?:like|love|enjoy)\s+(?P<obj>.+?)(?:\s+any ?more)?$", re.IGNORECASE)
_PLAN = re.compile(
    r"^(?:(?:also|really|still|now|finally|definitely|actually) )*(?:going to|gonna|planning to|planning on|plan to|planned to|intend to|"
    r"hoping to|hope to|thinking about|thinking of|about to|want to|wanna|would love to|'d love to|aiming to|looking to|set to|"
    r"getting ready to|preparing to|signing up for|signed up for)\s+(?P<obj>.+)$",
    re.IGNORECASE,
)
_ING = re.compile(r"^(?:(?:also|really|still|now|currently|actually|finally|totally|busy|been) )*(?P<verb>[a-z]+ing)\b\s*(?P<obj>.*)$", re.IGNORECASE)
_HAVE = re.compile(r"^(?:have|has|'ve got|got|own)\s+(?P<obj>(?:a|an|two|three|four|five|some|my own|our own)\s+.+)$", re.IGNORECASE)
_IDENTITY = re.compile(r"^(?:a|an)\s+(?P<obj>(?!bit\b|little\b|lot\b|few\b|fan\b|big fan\b|huge fan\b).+)$", re.IGNORECASE)
_PERFECT = re.compile(r"^(?:(?:just|recently|finally|already|also|actually|now|even) )*(?P<verb>[a-z]+)\s*(?P<obj>.*)$", re.IGNORECASE)
_PAST = re.compile(r"^(?:(?:just|recently|finally|also|actually|even|then|once|already|totally) )*(?P<verb>[a-z]+)\b\s*(?P<obj>.*)$", re.IGNORECASE)
_IRREGULAR = frozenset(
    ["went", "ran", "made", "took", "got", "bought", "began", "built", "won", "wrote", "read", "met", "saw", "found", "gave", "left", "lost", "spent", "sold", "sent", "taught", "drove", "flew", "rode", "swam", "sang", "sat", "stood", "threw", "caught", "brought", "held", "kept", "led", "paid", "put", "quit", "set", "shot", "slept", "spoke", "stuck", "struck", "swore", "told", "tore", "understood", "woke", "wore", "became", "came", "did", "drew", "ate", "fell", "fought", "forgave", "grew", "heard", "hid", "hit", "hurt", "knit", "lent", "let", "lit", "shook", "shut", "split", "spread", "stole", "stung", "swept", "swung"]
)
_NOT_PAST = frozenset(
    ["need", "feed", "seed", "speed", "bleed", "breed", "indeed", "proceed", "exceed", "succeed", "red", "bed", "shed", "wed", "weed", "hundred", "sacred", "thought", "felt", "knew", "meant", "hoped", "guessed", "said", "told", "wanted", "loved", "liked", "enjoyed", "hated", "seemed", "looked", "sounded", "wished", "wondered", "realised", "realized", "decided", "tried", "used", "called", "named", "excited", "interested", "inspired", "amazed", "blessed", "scared", "worried", "tired", "bored", "surprised", "pleased", "impressed", "stoked"]
)
# a time phrase is not part of an object, and gives an event its day
_TIME = re.compile(
    r"\b(?P<phrase>yesterday|last night|this morning|this afternoon|this evening|tonight|today|the other day|"
    r"last (?:week|weekend|month|year|summer|winter|spring|fall|autumn|monday|tuesday|wednesday|thursday|friday|saturday|sunday|mon|tues?|wed|thu(?:rs?)?|fri|sat|sun)|"
    r"(?:a|one|two|three|four|five|six|a few|a couple of|couple of|several|\d+) (?:days?|weeks?|months?|years?) ago|"
    r"next (?:week|weekend|month|year|summer|monday|tuesday|wednesday|thursday|friday|saturday|sunday)|tomorrow|"
    r"this (?:week|weekend|month|year|summer)|recently|lately|soon|later)\b",
    re.IGNORECASE,
)
_LEADING = re.compile(r"^(?:the|a|an|my|our|some|this|that|these|those|to)\s+", re.IGNORECASE)
_PRONOUN_ONLY = re.compile(r"^(?:it|that|this|them|those|these|you|him|her|one|so|too|there|here|such|something|anything|everything|stuff)$", re.IGNORECASE)
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAY_ABBREVIATIONS = {"mon": "monday", "tue": "tuesday", "tues": "tuesday", "wed": "wednesday", "thu": "thursday",
                          "thur": "thursday", "thurs": "thursday", "fri": "friday", "sat": "saturday", "sun": "sunday"}
_COUNTS = {"a": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "a few": 3, "a couple of": 2, "couple of": 2, "several": 4}
_UNIT_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}
_PREF_VERB = {"love": "loves", "loves": "loves", "adore": "loves", "like": "likes", "enjoy": "enjoys", "hate": "dislikes",
              "dislike": "dislikes", "prefer": "prefers", "can't stand": "dislikes"}
_PREF_BE_VERB = {"not a fan of": "dislikes"}


def resolve_when(phrase: str, at: float) -> float | None:
    """The start (UTC midnight) of the day a time phrase points to, counted from ``at``; None
    for phrases with no day ("recently", "soon")."""
    p = " ".join(phrase.casefold().split())
    now = datetime.fromtimestamp(at, UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    delta: timedelta | None = None
    if p in ("today", "this morning", "this afternoon", "this evening", "tonight"):
        delta = timedelta()
    elif p in ("yesterday", "last night"):
        delta = timedelta(days=-1)
    elif p == "the other day":
        delta = timedelta(days=-2)
    elif p == "tomorrow":
        delta = timedelta(days=1)
    elif p.startswith(("last ", "next ", "this ")):
        word, unit = p.split(" ", 1)
        sign = {"last": -1, "next": 1, "this": 0}[word]
        unit = _WEEKDAY_ABBREVIATIONS.get(unit, unit)
        if unit in _WEEKDAYS:
            diff = (now.weekday() - _WEEKDAYS.index(unit)) % 7 or 7
            delta = timedelta(days=-diff) if sign < 0 else timedelta(days=(7 - diff) % 7 or 7)
        elif unit == "weekend":
            back = (now.weekday() - 5) % 7 or 7
            delta = timedelta(days=-back if sign < 0 else (7 - back) % 7 or 7) if sign else timedelta(days=(5 - now.weekday()) % 7)
        else:
            days = {"week": 7, "month": 30, "year": 365, "summer": 182, "winter": 182, "spring": 182, "fall": 182, "autumn": 182}.get(unit)
            if days is None:
                return None
            delta = timedelta(days=sign * days)
    else:
        m = re.fullmatch(r"(a|one|two|three|four|five|six|a few|a couple of|couple of|several|\d+) (day|week|month|year)s? ago", p)
        if m is None:
            return None
        count = int(m.group(1)) if m.group(1).isdigit() else _COUNTS[m.group(1)]
        delta = timedelta(days=-count * _UNIT_DAYS[m.group(2)])
    return (day + delta).timestamp()


_TRAILING = re.compile(
    r"\s+(?:with (?:my|our) \w+|for (?:a|the) (?:while|bit)|too|as well|again|lol|haha|a lot|so much|right now|now|then|"
    r"about|around|almost|nearly|over|for|to|with|of|at|in|on|from|by|and|or|the|a|an|my|our|so|really|just)$",
    re.IGNORECASE,
)
_OWN = {"my": "their", "our": "their", "me": "them", "myself": "themselves", "ourselves": "themselves", "us": "them", "mine": "theirs"}
# words that say nothing on their own: an object made only of them ("make it happen") is no fact
_EMPTY = frozenset(
    ["it", "it's", "this", "that", "these", "those", "them", "they", "there", "here", "something", "anything", "everything", "stuff", "thing", "things", "one", "some", "a", "an", "the", "make", "do", "get", "go", "keep", "happen", "work", "it's", "lot", "more", "most", "much", "many", "good", "great", "best", "well", "out", "up", "on", "off", "of", "to", "for", "with", "in", "at", "sure", "way", "back", "going", "their", "them", "best", "can"]
)


def _clean(raw: str) -> str | None:
    value = _TIME.sub("", raw)
    value = _END.sub("", " ".join(value.split()))
    value = re.sub(r"^(?:and|but|or|so|because)\b.*$", "", value, flags=re.IGNORECASE)  # nothing before the conjunction
    value = value.replace('"', "").replace("\u201c", "").replace("\u201d", "")
    words = value.split()[:MAX_WORDS]
    value = " ".join(words)
    previous = None
    while previous != value:
        previous, value = value, _TRAILING.sub("", value).strip(" '()-")
    if not value or re.search(r"\b(?:you|your|yours|you're|you've|ya)\b", value, re.IGNORECASE):
        return None  # about the other speaker: not the speaker's fact (and unresolvable here)
    value = " ".join(_OWN.get(w.casefold(), w) for w in value.split())
    core = _LEADING.sub("", value)
    if not core or _PRONOUN_ONLY.match(core) or len(core) < 2 or _PRONOUN_ONLY.match(core.split()[0]):
        return None  # "it in pottery class": the thing itself is said elsewhere
    if not {w.casefold().strip(".,!'") for w in value.split()} - _EMPTY:
        return None
    return value


def _is_past(verb: str) -> bool:
    v = verb.casefold()
    if v in _NOT_PAST:
        return False
    return v in _IRREGULAR or (v.endswith("ed") and len(v) > 4)


def _day(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


def _when(clause: str, at: float) -> tuple[float, bool]:
    """The day the clause's time phrase points to (or ``at``) and whether one was said."""
    for m in _TIME.finditer(clause):
        resolved = resolve_when(m.group("phrase"), at)
        if resolved is not None:
            return resolved, True
    return at, False


def _clause(clause: str, speaker: str, at: float) -> Statement | None:
    m = _SUBJECT.match(clause.strip())
    if m is None:
        return None
    kin = (m.group("kin") or m.group("okin") or "").casefold()
    if m.group("subj").casefold().startswith(("my ", "our ")):
        if kin not in _KIN:
            return None
        subject = f"{speaker}'s {kin}"
    else:
        subject = speaker
    aux = (m.group("aux") or "").strip().casefold().lstrip("'")
    rest = m.group("rest").strip().rstrip(".!,;:")
    if kin and aux == "" and rest.split()[0].casefold() in ("is", "are", "was", "were", "has", "have", "had"):
        aux, rest = rest.split()[0].casefold(), " ".join(rest.split()[1:])  # "my kids are ..." / "my son has ..."
    if aux == "" and (neg := _PREF_NEG.match(rest)):  # "I don't like X anymore": retracts the preference
        obj = _clean(neg.group("obj"))
        if obj is None:
            return None
        return Statement(subject, f"feels about {obj}", "", f"{subject} no longer likes {obj}", retraction=True, kind="preference", valid_from=at)
    if not rest or _NOT_FACT.match(rest) or re.match(r"^\w+n[\'\u2019]t\b|^(?:not|never)\b", rest, re.IGNORECASE):
        return None  # a negated clause ("I won't quit") states no event
    when, dated = _when(clause, at)
    first_person_be = aux in ("m", "am", "re", "are", "is", "was", "were")
    if first_person_be:
        if pref := _PREF_BE.match(rest):
            obj = _clean(pref.group("obj"))
            if obj is None:
                return None
            verb = _PREF_BE_VERB.get(pref.group("verb").casefold(), "loves")
            return Statement(subject, f"feels about {obj}", verb, f"{subject} {verb} {obj}", kind="preference", valid_from=at)
        if plan := _PLAN.match(rest):
            return _plan(subject, plan.group("obj"), at)
        if ing := _ING.match(rest):
            verb = ing.group("verb").casefold()
            if verb == "going" and re.match(r"^[a-z]+ing\b", ing.group("obj"), re.IGNORECASE):  # "we're going camping"
                return _plan(subject, "go " + ing.group("obj"), at)
            if verb in ("going", "thinking", "hoping", "planning", "trying", "looking", "feeling", "having", "doing", "getting", "saying", "kidding"):
                return None
            obj = _clean(ing.group("obj")) if ing.group("obj") else None
            if obj is None:
                return None
            if dated and when > at:  # "I'm hosting a competition next month": a plan
                day = _day(when)
                return Statement(subject, f"plans {verb} {obj}", day, f"{subject} is {verb} {obj} (around {day})", kind="plan", valid_from=at)
            return Statement(subject, f"is {verb} {obj}", "ongoing", f"{subject} is {verb} {obj}", kind="activity", valid_from=at)
        if ident := _IDENTITY.match(rest):
            obj = _clean(ident.group("obj"))
            if obj is None:
                return None
            return Statement(subject, f"is a {obj}", "yes", f"{subject} is a {obj}", kind="identity", valid_from=at)
        return None
    if aux in ("ll", "will"):
        return _plan(subject, rest, at)
    if aux in ("ve", "have", "had") and (ing := _ING.match(rest)) and rest.casefold().startswith("been "):
        verb = ing.group("verb").casefold()
        obj = _clean(ing.group("obj")) if ing.group("obj") else None
        if obj is None or verb in ("going", "thinking", "feeling", "trying", "having", "doing", "getting"):
            return None
        return Statement(subject, f"is {verb} {obj}", "ongoing", f"{subject} has been {verb} {obj}", kind="activity", valid_from=at)
    if aux in ("ve", "have") and re.match(r"^(?:got )?(?:a|an|two|three|four|five|some|my own|our own)\s", rest, re.IGNORECASE):
        rest = "have " + rest.removeprefix("got ")
    if aux in ("ve", "have", "") and (have := _HAVE.match(rest)):
        obj = _clean(have.group("obj"))
        if obj is None:
            return None
        return Statement(subject, f"has {obj}", "yes", f"{subject} has {obj}", kind="has", valid_from=at)
    if aux == "" and (pref := _PREF.match(rest)):
        obj = _clean(pref.group("obj"))
        if obj is None or obj.casefold().startswith(("to hear", "to see", "hearing", "seeing", "how", "what", "your", "you")):
            return None
        verb = _PREF_VERB[pref.group("verb").casefold().rstrip("s") if pref.group("verb").casefold() != "loves" else "love"]
        said = verb.removesuffix("s") if kin else verb  # "Melanie's kids love nature"
        return Statement(subject, f"feels about {obj}", verb, f"{subject} {said} {obj}", kind="preference", valid_from=at)
    if aux == "" and (plan := _PLAN.match(rest)):
        return _plan(subject, plan.group("obj"), at)
    shape = _PERFECT if aux in ("ve", "have", "had") else _PAST if aux == "" else None
    if shape is None:
        return None
    past = shape.match(rest)
    if past is None or not _is_past(past.group("verb")):
        return None
    verb = past.group("verb").casefold()
    said = _TIME.sub("", past.group("obj")).strip(" ,.!")
    obj = _clean(said) if said else None
    if obj is None and (said or not dated):
        return None  # an object that says nothing ("made it"), or an undated bare verb
    phrase = f"{verb} {obj}" if obj else verb
    day = _day(when)
    return Statement(subject, f"{phrase} on {day}", day, f"{subject} {phrase} on {day}", kind="event", valid_from=when)


def _plan(subject: str, raw: str, at: float) -> Statement | None:
    target, dated = _when(raw, at)
    obj = _clean(raw)
    if obj is None or _NOT_FACT.match(obj) or obj.casefold().startswith(("keep", "be there", "help you", "try", "check", "see", "let you")):
        return None
    when = _day(target) if dated and target > at else "open"
    text = f"{subject} plans to {obj}" + (f" (around {when})" if when != "open" else "")
    return Statement(subject, f"plans to {obj}", when, text, kind="plan", valid_from=at)


def extract_dialogue_facts(text: str, speaker: str, at: float) -> tuple[Statement, ...]:
    """Facts ``speaker`` states about themselves in ``text`` (said at ``at``, epoch seconds), in
    sentence order, at most one per clause and none repeated."""
    subject = " ".join(speaker.split())
    if not subject:
        return ()
    found: dict[tuple[str, str], Statement] = {}
    for sentence in split_sentences(text):
        if sentence.rstrip().endswith("?"):
            continue
        for clause in _CLAUSE_SPLIT.split(sentence):
            statement = _clause(clause, subject, at) if clause else None
            if statement is not None:
                found.setdefault((statement.predicate.casefold(), statement.object.casefold()), statement)
    return tuple(found.values())
