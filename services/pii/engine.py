"""PII domain logic: batched Presidio analysis behind a small interface, plus replacement.

`PresidioAnalyzer` is the only part that touches models; it is built and loaded in
the service's warm-up (never at import). `PiiEngine` validates requests, batches
analysis across concurrent requests, drops excluded types, resolves overlaps and
rewrites texts.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Sequence
from typing import Protocol

from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

from common.batcher import MicroBatcher
from pii.replace import Method, replacer
from pii.spans import InvalidInput, Span, check_texts, normalize_entity_types, resolve_overlaps

# Presidio entity types that exist but are not detected by default: excluding them is
# accepted (a no-op); any other name is a caller error.
OTHER_KNOWN_ENTITIES = frozenset(
    {
        "LOCATION",
        "ORGANIZATION",
        "DATE_TIME",
        "NRP",
        "URL",
        "MAC_ADDRESS",
        "UUID",
        "AU_ABN",
        "AU_ACN",
        "AU_TFN",
        "AU_MEDICARE",
        "IN_PAN",
        "IN_AADHAAR",
        "IN_VEHICLE_REGISTRATION",
        "IN_VOTER",
        "IN_PASSPORT",
        "SG_NRIC_FIN",
        "UK_PASSPORT",
        "UK_DRIVING_LICENCE",
        "UK_POSTCODE",
        "ES_PASSPORT",
        "IT_DRIVER_LICENSE",
        "IT_VAT_CODE",
        "IT_PASSPORT",
        "IT_IDENTITY_CARD",
        "DE_PASSPORT",
        "DE_ID_CARD",
        "DE_SOCIAL_SECURITY",
        "DE_VAT_ID",
        "KR_RRN",
        "CA_SIN",
    }
)

# USPS street suffixes and unit words: a "name" ending in one is an address.
STREET_WORDS = frozenset(
    "street st avenue ave road rd roads lane ln drive boulevard blvd way court ct courts place pl "
    "square squares terrace parkway pkwy highway hwy expressway path trail alley plaza circle "
    "crossing ridge hills heights park parks gardens village villages springs falls forest "
    "field fields flat flats glen glens green greens islands island gateway mall prairie rue "
    "shoal shoals burg burgs dam bypass station estates meadows neck views view harbor haven "
    "suite apt unit".split()
)
_SSN_SHAPE = re.compile(r"\d{3}-\d{2}-\d{4}")


class Analyzer(Protocol):
    """Finds candidate spans (every configured type, above the score threshold, may overlap)."""

    @property
    def entities(self) -> frozenset[str]: ...

    def analyze_batch(self, texts: list[str]) -> list[list[Span]]: ...


class PresidioAnalyzer:
    """Presidio's BatchAnalyzerEngine on a spaCy pipeline (nlp.pipe over the batch)."""

    def __init__(self, *, spacy_model: str, score_threshold: float, entities: Sequence[str] = ()):
        from pii.recognizers import DEFAULT_ENTITIES

        self._spacy_model = spacy_model
        self._score_threshold = score_threshold
        self._entities = frozenset(entities or DEFAULT_ENTITIES)
        self._batch = None

    @property
    def entities(self) -> frozenset[str]:
        return self._entities

    def load(self) -> None:
        import spacy
        from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine
        from presidio_analyzer.nlp_engine import SpacyNlpEngine

        from pii.recognizers import LANGUAGE, build_registry

        class _Engine(SpacyNlpEngine):
            # No parser: Presidio uses tokens, lemmas and entities only (~30% faster).
            def load(self) -> None:
                self.nlp = {m["lang_code"]: spacy.load(m["model_name"], exclude=["parser"]) for m in self.models}

        nlp_engine = _Engine(models=[{"lang_code": LANGUAGE, "model_name": self._spacy_model}])
        nlp_engine.load()
        registry = build_registry()
        supported = set(registry.get_supported_entities([LANGUAGE]))
        missing = sorted(self._entities - supported)
        if missing:
            raise ValueError(f"PII_ENTITIES names types no recognizer finds: {', '.join(missing)}")
        analyzer = AnalyzerEngine(
            registry=registry,
            nlp_engine=nlp_engine,
            supported_languages=[LANGUAGE],
            default_score_threshold=self._score_threshold,
        )
        self._language = LANGUAGE
        self._batch = BatchAnalyzerEngine(analyzer_engine=analyzer)
        self.analyze_batch(["warm-up: John Smith, john@example.com, 212-555-0123"])

    def analyze_batch(self, texts: list[str]) -> list[list[Span]]:
        if self._batch is None:
            raise RuntimeError("PresidioAnalyzer.load() was not called")
        results = self._batch.analyze_iterator(
            texts,
            language=self._language,
            batch_size=max(1, len(texts)),
            entities=sorted(self._entities),
            score_threshold=self._score_threshold,
        )
        return [
            [s for r in found if (s := Span(r.entity_type, r.start, r.end, float(r.score))) and keep(s, text)]
            for text, found in zip(texts, results, strict=True)
        ]


def keep(span: Span, text: str) -> bool:
    """Drops findings that are never personal data in a prompt (known false positives)."""
    value = text[span.start : span.end]
    if span.type == "PERSON":
        # spaCy's small model tags acronyms ("JSON"), stray lower-case words, code
        # identifiers and street names ("Margaret Forest", "Lauren Falls Suite") as people.
        words = value.replace(".", " ").split()
        return (
            any(c.isupper() for c in value)
            and not value.isupper()
            and "\n" not in value
            and not any(c.isdigit() or c in "_<>{}()[]=/\\@#$%^&*|" for c in value)
            and not (len(words) > 1 and words[-1].lower() in STREET_WORDS)
        )
    if span.type == "PHONE_NUMBER":
        return _plausible_phone(value, span.score)
    if span.type == "IP_ADDRESS":
        # Loopback and "any" addresses appear in technical prompts and identify no one.
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return True
        return not (address.is_loopback or address.is_unspecified)
    return True


def _plausible_phone(value: str, score: float) -> bool:
    """libphonenumber's lenient matcher also accepts number lists, invoice ids and the SSN shape."""
    if _SSN_SHAPE.fullmatch(value):
        return False
    if value.isdigit() and score < 0.5:  # a bare digit string is a phone number only next to a phone word
        return False
    groups = re.findall(r"\d+", value.lstrip("+"))
    if value.startswith("+") or (len(groups) > 1 and groups[0] == "1"):
        groups = groups[1:]  # country code
    if any(len(g) == 1 for g in groups):  # "4 8 15 16 23 42"
        return False
    return not (len(groups) > 1 and len(groups[0]) == 4 and groups[0][:2] in ("19", "20") and "-" in value)


class PiiEngine:
    """The service's domain interface: analyse and anonymise lists of texts."""

    def __init__(
        self,
        analyzer: Analyzer,
        *,
        max_texts: int = 64,
        max_text_chars: int = 20_000,
        max_batch: int = 32,
        max_wait_s: float = 0.0,
        faker=None,
        rng: random.Random | None = None,
    ):
        self._analyzer = analyzer
        self._max_texts = max_texts
        self._max_text_chars = max_text_chars
        self._known = analyzer.entities | OTHER_KNOWN_ENTITIES
        self._batcher: MicroBatcher[str, list[Span]] = MicroBatcher(
            "pii", analyzer.analyze_batch, max_batch, max_wait_s
        )
        self._anonymizer = AnonymizerEngine()
        self._faker = faker
        self._rng = rng or random.SystemRandom()

    @property
    def entities(self) -> frozenset[str]:
        return self._analyzer.entities

    def close(self) -> None:
        self._batcher.close()

    async def analyze(self, texts: Sequence[str], excluded: Sequence[str] = ()) -> list[list[Span]]:
        """Non-overlapping spans per text, ordered by start; InvalidInput for bad requests."""
        texts = list(texts)
        check_texts(texts, max_texts=self._max_texts, max_text_chars=self._max_text_chars)
        skip = normalize_entity_types(excluded, self._known)
        found = await self._batcher.submit(texts)
        # Overlaps are settled before exclusion: an excluded entity's text is left intact,
        # not handed to a weaker finding of another type that overlaps it.
        return [[s for s in resolve_overlaps(spans) if s.type not in skip] for spans in found]

    async def anonymize(
        self, texts: Sequence[str], method: Method, excluded: Sequence[str] = ()
    ) -> tuple[list[str], list[list[Span]]]:
        """Rewritten texts and the spans replaced in each (offsets into the input)."""
        results = await self.analyze(texts, excluded)
        replace = replacer(method, faker=self._faker, rng=self._rng)  # one per request: consistent fakes
        return [self._rewrite(t, spans, replace) for t, spans in zip(texts, results, strict=True)], results

    def _rewrite(self, text: str, spans: list[Span], replace) -> str:
        if not spans:
            return text
        operators = {
            t: OperatorConfig("custom", {"lambda": lambda value, t=t: replace(t, value)})
            for t in {s.type for s in spans}
        }
        results = [RecognizerResult(s.type, s.start, s.end, s.score) for s in spans]
        return self._anonymizer.anonymize(text=text, analyzer_results=results, operators=operators).text


__all__ = ["Analyzer", "InvalidInput", "Method", "PiiEngine", "PresidioAnalyzer", "Span"]
