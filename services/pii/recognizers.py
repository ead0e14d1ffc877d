"""Which Presidio recognizers run, tuned for the prompts callers send (see README.md).

Imports presidio, so it is only imported by `engine.PresidioAnalyzer.load()`.
"""

from __future__ import annotations

from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerRegistry
from presidio_analyzer import predefined_recognizers as pre

LANGUAGE = "en"

# The default set: personal identifiers that are almost never needed to answer a prompt.
# Left out on purpose: ORGANIZATION, LOCATION, DATE_TIME, NRP, URL (they rewrite ordinary
# prompts: "the capital of France", "in 2024", "read https://docs.python.org").
DEFAULT_ENTITIES: tuple[str, ...] = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "CRYPTO",
    "IBAN_CODE",
    "IP_ADDRESS",
    "US_SSN",
    "US_ITIN",
    "US_BANK_NUMBER",
    "ABA_ROUTING_NUMBER",
    "US_DRIVER_LICENSE",
    "US_PASSPORT",
    "MEDICAL_LICENSE",
    "UK_NHS",
    "UK_NINO",
    "ES_NIF",
    "ES_NIE",
    "IT_FISCAL_CODE",
    "PL_PESEL",
    "FI_PERSONAL_IDENTITY_CODE",
    "DE_TAX_ID",
)

# "number" is left out on purpose: it is as much a bank/passport/NHS word as a phone word.
PHONE_CONTEXT = [
    "phone",
    "telephone",
    "tel",
    "cell",
    "cellphone",
    "mobile",
    "call",
    "text",
    "contact",
    "reach",
    "fax",
    "whatsapp",
    "sms",
]


def _context_only(recognizer: PatternRecognizer, score: float = 0.1) -> PatternRecognizer:
    """Makes a finding need a context word nearby to pass the 0.4 threshold.

    Every pattern's score becomes `score`, and a passing checksum no longer lifts the
    finding to 1.0 (Presidio's default) but only keeps it; a failing one still drops it.
    A context word then adds 0.35.
    """
    recognizer.patterns = [Pattern(p.name, p.regex, score) for p in recognizer.patterns]
    checksum = recognizer.validate_result

    def validate_result(pattern_text: str) -> bool | None:
        return None if checksum(pattern_text) is not False else False

    recognizer.validate_result = validate_result  # type: ignore[method-assign]
    return recognizer


class UsPhoneShapeRecognizer(PatternRecognizer):
    """North-American numbers written like phone numbers that libphonenumber rejects.

    libphonenumber only accepts assigned area codes; a prompt's "(328) 704-6557" is still
    someone's phone number as far as the caller is concerned. Only the separated shapes
    `(NXX) NXX-XXXX`, `NXX-NXX-XXXX`, `NXX.NXX.XXXX`, `+1 NXX NXX XXXX` count.
    """

    PATTERNS = [
        Pattern("US phone shape (parenthesised)", r"(?<![\w+])\(\d{3}\)\s?\d{3}[-.\s]\d{4}\b", 0.4),
        Pattern(
            "US phone shape (separated)",
            r"(?<![\w.+-])(?:\+1[-.\s])?\d{3}([-.\s])\d{3}\1\d{4}\b(?![-.]\d)",
            0.4,
        ),
    ]

    def __init__(self, **kwargs):
        super().__init__(
            supported_entity="PHONE_NUMBER",
            patterns=self.PATTERNS,
            context=PHONE_CONTEXT,
            name="UsPhoneShapeRecognizer",
            **kwargs,
        )


# Presidio's credit-card pattern misses Mastercard's 2-series (2221-2720) and unbroken
# 17-19 digit numbers (Visa/UnionPay/Maestro); both are Luhn-checked like the rest.
LONG_CARD = Pattern("Card number, 17-19 digits (weak)", r"\b[2-6]\d{16,18}\b", 0.3)
MASTERCARD_2_SERIES = Pattern(
    "Mastercard 2-series (weak)",
    r"\b(2(?:2[2-9]\d|[3-6]\d\d|7[01]\d|720))[- ]?(\d{4})[- ]?(\d{4})[- ]?(\d{4})\b",
    0.3,
)


def build_recognizers() -> list[EntityRecognizer]:
    en = {"supported_language": LANGUAGE}
    return [
        pre.SpacyRecognizer(supported_entities=["PERSON"], **en),
        pre.EmailRecognizer(**en),
        pre.PhoneRecognizer(context=PHONE_CONTEXT, **en),
        UsPhoneShapeRecognizer(**en),
        pre.CreditCardRecognizer(patterns=[*pre.CreditCardRecognizer.PATTERNS, MASTERCARD_2_SERIES, LONG_CARD], **en),
        pre.CryptoRecognizer(**en),
        pre.IbanRecognizer(**en),
        pre.IpRecognizer(**en),
        pre.UsSsnRecognizer(**en),
        pre.UsItinRecognizer(**en),
        # Bank, routing and passport numbers are bare digit strings: context only. With a
        # context word they score 0.45 and beat a bare-digit phone finding (0.4).
        _context_only(pre.UsBankRecognizer(context=[*pre.UsBankRecognizer.CONTEXT, "checking", "savings"], **en)),
        _context_only(pre.AbaRoutingRecognizer(context=[*pre.AbaRoutingRecognizer.CONTEXT, "routing number"], **en)),
        pre.UsLicenseRecognizer(**en),
        _context_only(pre.UsPassportRecognizer(**en)),
        pre.MedicalLicenseRecognizer(**en),
        # A US phone number (3-3-4 digits) passes the NHS mod-11 check one time in eleven:
        # an NHS number needs an NHS word nearby.
        _context_only(pre.NhsRecognizer(context=[*pre.NhsRecognizer.CONTEXT, "nhs number", "health service"], **en)),
        pre.UkNinoRecognizer(context=[*pre.UkNinoRecognizer.CONTEXT, "insurance number", "ni"], **en),
        # EU national identifiers with English context words (Presidio ships them for
        # es/it/pl/fi/de only).
        pre.EsNifRecognizer(context=["dni", "nif", "spanish id", "identity", "documento"], **en),
        pre.EsNieRecognizer(context=["nie", "foreigner", "residence", "spanish"], **en),
        pre.ItFiscalCodeRecognizer(context=["codice fiscale", "fiscal code", "tax code", "cf"], **en),
        _context_only(pre.PlPeselRecognizer(context=["pesel", "polish", "national id"], **en)),
        pre.FiPersonalIdentityCodeRecognizer(context=["hetu", "henkilötunnus", "personal identity code"], **en),
        _context_only(
            pre.DeTaxIdRecognizer(
                context=[
                    "steuer-id",
                    "steueridentifikationsnummer",
                    "idnr",
                    "tax id",
                    "tax identification",
                    "german",
                ],
                **en,
            )
        ),
    ]


def build_registry() -> RecognizerRegistry:
    registry = RecognizerRegistry(supported_languages=[LANGUAGE])
    for recognizer in build_recognizers():
        registry.add_recognizer(recognizer)
    return registry
