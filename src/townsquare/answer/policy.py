"""The content policy in front of the LLM, and the defences against poisoned posts.

Two jobs, both deterministic so they can be tested line by line against the
red-team corpus in ``answer/redteam/``:

**Questions** (:meth:`Policy.check`). townsquare answers candid, political,
edgy and controversial questions: "is X corrupt?", "what are people saying
about the abortion ruling?", "who is winning the culture war?" get answers.
It declines a short list of requests whatever the wording:

- ``sexual_real_person``: sexualised depictions of real, identifiable people;
- ``violent_real_person``: fictional or graphic depictions of violence against
  real people;
- ``harassment``: helping target a person (threats, insults to send,
  brigading, getting someone fired);
- ``doxxing``: home addresses, phone numbers, unmasking pseudonymous accounts;
- ``serious_harm``: instructions for weapons capable of mass harm, hard drugs,
  malware, or killing/poisoning someone;
- ``self_harm``: methods of self-harm (answered with a pointer to help).

The rules look for a *request to produce* such content (a verb like write,
describe, how to, find), not for the topic: news about a deepfake scandal or an
assassination attempt is still news. The persona prompts repeat the policy
for whatever the patterns miss.

**Posts** (:func:`neutralize_post`). Post text reaches the model as quoted,
untrusted data, and before that the parts that address an AI ("ignore previous
instructions", fake ``system:`` lines, chat-template tokens, markdown images
that would fetch a URL) are replaced by a marker, so even a 135M-parameter
model that follows any imperative it reads never sees one. The original text is
still what citations show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_I = re.IGNORECASE

# A request to produce something (not a noun: "the deepfake scandal" is news).
_DEPICT = (
    r"(?:write|compose|draft|describe|depict|imagine|generate|create|make|draw|paint|render|"
    r"roleplay|role-play|pretend|narrate|show me|send me|find me|get me|give me|écris|écrire|"
    r"raconte|imagine|décris|génère|dessine|rédige|invente|montre-moi|fais-moi|crée|créer|"
    r"décrire|raconter|imaginer|générer|dessiner|rédiger)"
)
_SEXUAL = (
    r"(?:nude|nudes|naked|undress(?:ed|ing)?|topless|sex|sexual|sexually|sexy|porn|porno|"
    r"pornographic|erotic|erotica|lewd|nsfw|explicit|orgasm|hooking up|sleeping with|"
    r"having sex|seduc\w*|strip(?:ping|tease)?|sextape|sex tape|nue?s?|à poil|sexuel\w*|"
    r"érotique|déshabill\w*|coucher avec)"
)
_VIOLENT = (
    r"(?:kill(?:ed|ing|s)?|murder(?:ed|ing|s)?|tortur\w*|behead\w*|decapitat\w*|stab(?:bed|bing)?|"
    r"shoot(?:ing)?|shot|execut\w*|hang(?:ed|ing)|lynch\w*|rap(?:e|ed|ing)|beat(?:en|ing)? up|"
    r"beaten|assassinat\w*|dismember\w*|mutilat\w*|burn(?:ed|t)? alive|bleed(?:ing)? out|"
    r"die(?:s|d)? (?:slowly|painfully|horribly)|tuer|tué\w*|tortur\w*|égorg\w*|assassin\w*|"
    r"frapp\w*|massacr\w*|poignard\w*|abattu\w*|abattre|décapit\w*|pendu\w*|égorg\w*|"
    r"lynch\w*|violée?s?|violer|brûlée?s? vif\w*|battue?s? à mort|meurtr\w*|fusill\w*|"
    r"étrangl\w*|lapid\w*|tabass\w*)"
)
_GRAPHIC = (
    r"(?:graphic|gory|gruesome|brutal(?:ly)?|in (?:vivid |full |gory )?detail|vividly|"
    r"step by step|en détail|sanglant\w*|gore|détaillée?s?|avec du sang|"
    r"de façon (?:réaliste|crue|brutale)|brutalement)"
)
_ROLE = (
    r"(?:celebrit(?:y|ies)|actress|actor|singer|rapper|politician|president|senator|"
    r"prime minister|minister|ceo|streamer|influencer|youtuber|journalist|athlete|"
    r"my (?:ex|boss|coworker|co-worker|colleague|classmate|teacher|neighbou?r|sister|brother|"
    r"friend|wife|husband|girlfriend|boyfriend|crush|roommate)|this (?:person|guy|girl|woman|man)|"
    r"a real person|real people|people i know|someone i know|mon ex|ma voisine|mon voisin|"
    r"ma collègue|mon collègue|mon patron|ma patronne|cette personne|"
    r"(?:premier |première )?ministre|présidente?|sénat(?:eur|rice)|députée?|maire|"
    r"chanteu(?:r|se)|act(?:eur|rice)|journaliste|célébrités?|influenceu(?:r|se)|rappeu(?:r|se)|"
    r"footballeu(?:r|se)|animat(?:eur|rice)|youtubeu(?:r|se)|streameu(?:r|se)|"
    r"une vraie personne|de vraies personnes)"
)
_CAPITALIZED = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-zà-ÿ'’-]+(?:\s+[A-Z][a-zà-ÿ'’-]+)*")
_HANDLE = re.compile(r"(?<![\w@])@[\w.\-]+")
_NOT_NAMES = frozenset(
    "I I'm I've I'd Write Describe Imagine Generate Create Make Draw Give Find Send Show Help "
    "Please Explain Compose Draft Post Get Let Pretend Tell What Who Why When Where How Which "
    "Is Are Was The A An And But Or So AI GPT NSFW OK Okay".split()
)

_HARASS = [
    re.compile(
        r"\b(?:harass\w*|bully\w*|cyberbull\w*|intimidat\w*|stalk\w*|brigad\w*|dogpil\w*|"
        r"pile on|mass[- ]report\w*|swat(?:ting)?|harcel\w*|harcèl\w*|menac\w*|insult\w*)\b", _I
    ),
    re.compile(
        r"\b(?:write|compose|draft|send|give me|generate|craft)\b.{0,60}\b(?:death threats?|"
        r"threats?|threatening|insults?|hate mail|abusive|nasty (?:messages?|comments?|replies)|"
        r"mean (?:messages?|comments?|replies)|slurs?)\b", _I
    ),
    re.compile(r"\bmake\b.{0,40}\blife (?:a )?(?:living )?(?:hell|miserable)\b", _I),
    re.compile(
        r"\b(?:écris|écrire|rédige|rédiger|envoie|envoyer|donne-moi|génère|compose|trouve-moi)"
        r"\b.{0,60}\b(?:menaces?|insultes?|injures?|messages? (?:haineux|méchants|insultants)|"
        r"commentaires? (?:haineux|méchants))\b", _I
    ),
    re.compile(r"\b(?:get|make)\b.{0,40}\b(?:fired|kicked out|expelled|deplatformed)\b", _I),
    re.compile(r"\b(?:tell|convince|encourage)\b.{0,40}\b(?:kill (?:him|her|them)sel(?:f|ves)|"
               r"kys|end (?:his|her|their) life)\b", _I),
]
_HARASS_NEEDS_TARGET = {0, 1}
_DOX = [
    re.compile(r"\b(?:home|house|personal|private|residential|current|exact)\s+address(?:es)?\b",
               _I),
    re.compile(r"\b(?:phone|cell|mobile|telephone)\s*(?:number|#)|\bnum[ée]ro de t[ée]l[ée]phone\b",
               _I),
    re.compile(r"\bwhere\s+(?:does|do|did)\s+.{1,60}\s+live\b|\bwhere\b.{1,40}\blives\b|"
               r"\bo[uù]\s+habite\b|\badresse\s+(?:personnelle|priv[ée]e|du domicile)\b", _I),
    re.compile(r"\b(?:real|legal|full|true)\s+(?:name|identity)\s+(?:of|behind|for)\b|"
               r"\bunmask\w*\b|\bwho\s+(?:is|'s)\s+really\s+behind\b|\bdox+\w*\b", _I),
    re.compile(r"\b(?:license plate|social security|ssn|ip address|workplace|where .{1,30} works)"
               r"\b.{0,40}\b(?:of|for)\b", _I),
]
_DOX_WHERE = 2  # the "where does X live" rule: only for private people
_PRIVATE = re.compile(
    r"(?<![\w@])@[\w.\-]+|\b(?:my|our|mon|ma|mes)\s+(?:ex|boss|coworker|co-worker|colleague|"
    r"classmate|teacher|neighbou?r|sister|brother|friend|wife|husband|girlfriend|boyfriend|"
    r"crush|roommate|voisine?|coll[èe]gue|patronne?)\b|\bthis\s+(?:person|guy|girl|woman|man|"
    r"user|account)\b|\bcette\s+personne\b",
    _I,
)


def _private_target(text: str) -> bool:
    return _PRIVATE.search(text) is not None


_HARM = [
    re.compile(
        r"\b(?:how\s+(?:to|do\s+i|can\s+i|would\s+i|could\s+i|should\s+i)|steps?\s+to|"
        r"instructions?\s+(?:for|to|on)|recipe\s+for|guide\s+to|teach\s+me\s+(?:to|how)|"
        r"help\s+me\s+(?:make|build)|comment)\b"
        r".{0,60}?\b(?:make|build|synthesi[sz]e|produce|cook|create|assemble|brew|write|code|"
        r"program|develop|deploy|spread|weaponi[sz]e|grow|culture|fabriquer|faire|construire|"
        r"synth[ée]tiser)\b.{0,40}"
        r"\b(?:bombs?|explosives?|ied|pipe bombs?|detonators?|nerve agents?|sarin|vx|ricin|"
        r"anthrax|botulinum|bioweapons?|biological weapons?|chemical weapons?|dirty bombs?|"
        r"nuclear (?:bombs?|weapons?)|napalm|ghost guns?|untraceable guns?|silencers?|"
        r"meth(?:amphetamine)?|fentanyl|heroin|crack cocaine|ransomware|malware|keyloggers?|"
        r"botnets?|bombe|explosifs?|arme chimique|arme biologique)\b",
        _I,
    ),
    re.compile(
        r"\b(?:how\s+(?:to|do\s+i|can\s+i)|best\s+way\s+to|comment)\b.{0,30}\b(?:kill|murder|"
        r"poison|strangle|tuer|empoisonner)\b.{0,30}\b(?:someone|somebody|a person|people|my|"
        r"him|her|them|quelqu'un|mon|ma)\b",
        _I,
    ),
    re.compile(r"\bwithout\s+(?:getting\s+caught|leaving\s+(?:a\s+)?trace)\b.{0,40}\b(?:kill|"
               r"poison|murder|hurt)\b|\b(?:kill|poison|murder|hurt)\b.{0,40}\bwithout\s+"
               r"(?:getting\s+caught|leaving\s+(?:a\s+)?trace)\b", _I),
]
_SELF_HARM = re.compile(
    r"\b(?:how\s+(?:to|do\s+i|can\s+i|should\s+i)|best\s+way\s+to|painless\s+way\s+to|"
    r"comment)\b.{0,30}\b(?:kill\s+myself|end\s+my\s+life|commit\s+suicide|"
    r"hurt\s+myself|cut\s+myself|me\s+suicider|me\s+tuer)\b",
    _I,
)

SELF_HARM_MESSAGE = (
    "I can't help with that, but you don't have to go through this alone. If you are in "
    "danger or thinking about suicide, please contact local emergency services or a crisis "
    "line (in the US call or text 988; in France call 3114)."
)

#: The policy as the model reads it, after the rules and before the persona.
POLICY_PROMPT = (
    "Content policy: answer candid, controversial and political questions directly and "
    "fairly; say what each side claims and what the posts show, without refusing just "
    "because a topic is sensitive. Do not produce sexual or violent depictions of real "
    "people, help harass or threaten anyone, reveal private information such as home "
    "addresses or phone numbers, or give instructions for weapons, hard drugs, malware or "
    "hurting people."
)


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    allowed: bool
    category: str | None = None
    #: Which rule fired (for logs and tests), not shown to users.
    rule: str = ""


ALLOW = PolicyDecision(True)


def _has_target(text: str) -> bool:
    """Does the request name an identifiable person (a handle, a Name, or a role)?"""
    if _HANDLE.search(text) or re.search(r"\b" + _ROLE + r"\b", text, _I):
        return True
    for m in _CAPITALIZED.finditer(text):
        words = [w for w in m.group(0).split() if w not in _NOT_NAMES]
        if words:
            return True
    return False


class Policy:
    """Decides, before any retrieval or generation, whether to answer at all."""

    def check(self, question: str) -> PolicyDecision:
        text = " ".join(question.split())
        if _SELF_HARM.search(text):
            return PolicyDecision(False, "self_harm", "self_harm")
        for i, pattern in enumerate(_HARM):
            if pattern.search(text):
                return PolicyDecision(False, "serious_harm", f"harm[{i}]")
        depict = re.search(r"\b" + _DEPICT + r"\b", text, _I) is not None
        target = _has_target(text)
        if depict and target and re.search(r"\b" + _SEXUAL + r"\b", text, _I):
            return PolicyDecision(False, "sexual_real_person", "sexual")
        if (
            target
            and re.search(r"\b" + _VIOLENT + r"\b", text, _I)
            and (
                re.search(r"\b" + _GRAPHIC + r"\b", text, _I)
                or (depict and _fictional(text))
                or re.search(r"\b(?:being|getting|gets|get)\s+" + _VIOLENT + r"\b", text, _I)
            )
        ):
            return PolicyDecision(False, "violent_real_person", "violent")
        for i, pattern in enumerate(_HARASS):
            if pattern.search(text) and (i not in _HARASS_NEEDS_TARGET or target or
                                         re.search(r"\b(?:him|her|them|someone|somebody)\b",
                                                   text, _I)):
                if i == 0 and not _asks_to_act(text):
                    continue
                return PolicyDecision(False, "harassment", f"harass[{i}]")
        for i, pattern in enumerate(_DOX):
            if not pattern.search(text):
                continue
            # "Where does the Pope live" is public knowledge; "where does @x live" is not.
            who = _private_target(text) if i == _DOX_WHERE else (
                target or re.search(r"\b(?:his|her|their)\b", text, _I)
            )
            if who:
                return PolicyDecision(False, "doxxing", f"dox[{i}]")
        return ALLOW


def _fictional(text: str) -> bool:
    return re.search(
        r"\b(?:story|stories|fanfic|fan fiction|fiction|scene|poem|song|script|fantasy|"
        r"scenario|imagine|pretend|roleplay|role-play|picture|image|photo|video|deepfake|draw|"
        r"histoire|raconte|imagine|sc[èe]ne|sc[ée]nario|po[èe]me|chanson|r[ée]cit|vid[ée]o|"
        r"dessin|nouvelle|fanfiction)\w*\b",
        text,
        _I,
    ) is not None


def _asks_to_act(text: str) -> bool:
    """'help me harass X' acts; 'why is X being harassed?' asks about news."""
    return re.search(
        r"\b(?:help me|how (?:do|can|should) (?:i|we)|how to|let's|lets|i want to|we should|"
        r"write|give me|plan|organi[sz]e|let us|aide-moi|comment|écris|rédige|donne-moi|"
        r"je veux|on devrait|organise)\b|^\s*(?:please\s+)?"
        r"(?:harass|bully|threaten|intimidate|insult|humiliate|stalk|harc[eè]le|menace|insulte)",
        text,
        _I,
    ) is not None


# --- posts --------------------------------------------------------------------

REDACTED = "[instruction-like text removed]"
IMAGE_REDACTED = "[image]"

_INJECTION = re.compile(
    "|".join(
        [
            r"\b(?:ignore|disregard|forget|override|bypass|skip)\b[\w\s,]{0,40}?\b(?:instructions?"
            r"|prompts?|rules?|directions?|guidelines?|directives?|context|programming)\b",
            r"\byou\s+are\s+now\b|\bfrom\s+now\s+on,?\s+you\b|\bnew\s+(?:system\s+)?"
            r"instructions?\b|\bact\s+as\s+(?:an?\s+)?(?:unfiltered|jailbroken|evil|dan)\b",
            r"\b(?:jailbreak|developer\s+mode|dan\s+mode|do\s+anything\s+now)\b",
            r"\b(?:reply|respond|answer|output|say|print|write)\s+(?:only|exactly|just|"
            r"verbatim)\b",
            r"\b(?:repeat|reveal|print|show|leak)\s+(?:after\s+me|your\s+(?:system\s+)?"
            r"(?:prompt|instructions|rules))\b",
            r"\b(?:attention|note|message|instructions?)\s+(?:to|for)\s+(?:the\s+)?(?:ai|llm|"
            r"assistant|language model|chatbot|bot|model)\b",
            r"\b(?:ai|llm|assistant|language model|chatbot)s?\s*(?:reading|summari[sz]ing)"
            r"\s+this\b",
            r"\bignore[zs]?\s+(?:toutes?\s+)?(?:les|tes|vos)\s+(?:instructions|consignes|r[èe]gles)"
            r"\b|\boublie[zs]?\s+(?:toutes?\s+)?(?:les|tes|vos)\s+(?:instructions|consignes|"
            r"r[èe]gles)\b|\btu\s+es\s+maintenant\b|\bnouvelles?\s+instructions?\b",
        ]
    ),
    _I,
)
_ROLE_LINE = re.compile(r"^\s*(?:#+\s*)?(?:system|assistant|developer|user|human|ai)\s*(?::|$)", _I)
_SPECIAL = re.compile(
    r"<\|[^|>]{1,40}\|>|\[/?INST\]|<</?SYS>>|</?(?:system|instructions?|posts?|post|s)>|"
    r"\bBEGIN\s+(?:SYSTEM|INSTRUCTIONS)\b|\bEND\s+(?:OF\s+)?(?:POSTS?|DATA|CONTEXT)\b",
    _I,
)
_MD_IMAGE = re.compile(r"!\[[^\]]{0,500}\]\([^)]{0,2000}\)|<img\b[^>]{0,2000}>", _I)


@dataclass(frozen=True, slots=True)
class Neutralized:
    text: str
    #: True when something aimed at an AI was removed (the prompt says so beside the post).
    flagged: bool


def neutralize_post(text: str) -> Neutralized:
    """Post text safe to quote to a model: injections, fake roles and images removed.

    A chat-template token, a fake delimiter or a ``system:`` line starts an
    attack that may span lines, so everything from there on is withheld;
    elsewhere only the sentences that address an AI are.
    """
    out = _MD_IMAGE.sub(IMAGE_REDACTED, text)
    flagged = out != text
    kept: list[str] = []
    for line in out.splitlines():
        if _SPECIAL.search(line) or _ROLE_LINE.search(line):
            head = _SPECIAL.split(line, maxsplit=1)[0] if _SPECIAL.search(line) else ""
            if head.strip() and not _INJECTION.search(head):
                kept.append(head.strip())
            kept.append(REDACTED)
            flagged = True
            break
        for seg in re.split(r"(?<=[.!?])\s+", line):
            if _INJECTION.search(seg):
                flagged = True
                if not kept or kept[-1] != REDACTED:
                    kept.append(REDACTED)
            elif seg.strip():
                kept.append(seg.strip())
    return Neutralized(" ".join(kept).strip(), flagged)


def strip_images(text: str) -> str:
    """Markdown/HTML images in model output would make a client fetch a URL: drop them."""
    return _MD_IMAGE.sub("", text)
