"""Build the bundled raw samples in data/ from the public datasets in ../shared/datasets.

    .venv/bin/python data/build_samples.py [--shared ../shared/datasets]

The output is committed; this script documents exactly how it was made and rebuilds
it byte for byte (seeded). It takes real rows and plants the mess real task data has,
so that every stage of the pipeline has something to do:

banking77 (CC BY 4.0): ~3,000 train rows over all 77 intents with a steep class
imbalance, plus exact duplicates, near-duplicates (case, punctuation, "top-up" vs
"top up", one word changed), conflicting labels, train rows copied from the eval
split, PII, harmful content, too-short / repetitive / too-long texts and malformed
rows (truncated JSON, missing and wrongly typed fields, empty text, invalid UTF-8,
an oversized field, unknown labels, a CSV row with too many fields). Split over a
JSONL file and a CSV file (with quoted newlines) to exercise both readers. The eval
split is 5 rows per intent from the official test split, untouched. The official train
(10,003 rows) and test (3,080) splits are also copied as they are, for the accuracy
benchmark on the full data.

viggo (CC BY-SA 4.0): 1,200 text -> meaning-representation rows (class = dialogue
act, derived from the output), a few planted duplicates and broken MRs; eval from
the official test split.

clinc150 (CC BY 3.0): the source's own imbalanced training variant (25, 50, 75 or 100
queries per intent, by domain), unaltered, for 24 intents: 6 from each of four domains
with 25, 50, 75 and 100 queries per intent; eval from the official test split. The
imbalance is the source's, so balancing and synthesis are measured on a known,
controlled mix rather than one planted here.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import shutil
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 77


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def near_variant(text: str, rng: random.Random) -> str:
    """A copy that differs by case, punctuation, hyphenation or one word."""
    kinds = ["lower", "punct", "hyphen", "word", "space"]
    if "top-up" in text or "top up" in text:
        kind = "hyphen"
    else:
        kind = rng.choice(kinds[:2] + kinds[3:])
    if kind == "lower":
        out = text.lower() if text != text.lower() else text.upper()[:1] + text[1:]
    elif kind == "punct":
        out = text[:-1] if text.endswith(("?", ".", "!")) else text + "?"
    elif kind == "hyphen":
        out = text.replace("top-up", "top up") if "top-up" in text else text.replace("top up", "top-up")
    elif kind == "space":
        out = text.replace(" ", "  ", 1)
    else:
        words = text.split(" ")
        swaps = {"my": "the", "the": "my", "I": "i", "is": "was", "can": "could", "how": "How"}
        idx = [i for i, w in enumerate(words) if w in swaps]
        if idx:
            i = rng.choice(idx)
            words[i] = swaps[words[i]]
            out = " ".join(words)
        else:
            out = text.rstrip("?.!") + " please"
    return out if out != text else text + "!"


PII = [
    " My email is jane.doe{n}@example.com.",
    " You can call me on +44 7700 900{n:03d}.",
    " My card number is 4111 1111 1111 1111.",
    " Send it to IBAN GB82 WEST 1234 5698 7654 32.",
    " Reach me at (415) 555-01{n:02d} or m.smith{n}@mail.example.org.",
]
HARMFUL = [
    "I swear I will kill you all if my card does not arrive today",
    "If you freeze my account again I will bomb your branch",
    "I'm going to hurt the next agent who tells me to wait for my refund",
    "Your staff deserve to be shot for losing my transfer",
    "I will burn down your office if the top-up is not back",
]
TOO_SHORT = ["hi", "?", "ok", "card", "help", "..", "a", "yes"]
REPETITIVE = [
    "card card card card card card card card card card",
    "help help help help help help help help help help help",
    "why why why why why why why why why why why why",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
]


def build_banking77(shared: Path, rng: random.Random) -> tuple[list[str], set[str]]:
    """The messy sample; returns the intents in ramp order (fewest rows first) and every text it used."""
    src = shared / "banking77"
    train = read_csv(src / "train.csv")
    test = read_csv(src / "test.csv")
    labels = json.loads((src / "categories.json").read_text())
    by_label: dict[str, list[str]] = defaultdict(list)
    for row in train:
        by_label[row["category"]].append(row["text"])
    order = sorted(by_label)
    rng.shuffle(order)
    # Steep imbalance: class k of 77 gets 12 .. 90 rows (quadratic ramp), capped by what exists.
    rows: list[dict] = []
    for k, label in enumerate(order):
        n = min(len(by_label[label]), round(12 + 78 * (k / 76) ** 2))
        for text in rng.sample(by_label[label], n):
            rows.append({"text": text, "category": label})
    base = list(rows)

    eval_rows = []
    test_by_label: dict[str, list[str]] = defaultdict(list)
    for row in test:
        test_by_label[row["category"]].append(row["text"])
    for label in sorted(test_by_label):
        for text in rng.sample(test_by_label[label], 5):
            eval_rows.append({"text": text, "category": label})

    planted: list[dict] = []
    for row in rng.sample(base, 60):  # exact duplicates
        planted.append(dict(row))
    topups = [r for r in base if "top-up" in r["text"] or "top up" in r["text"]]
    for row in rng.sample(topups, min(15, len(topups))) + rng.sample(base, 45):  # near-duplicates
        planted.append({"text": near_variant(row["text"], rng), "category": row["category"]})
    for row in rng.sample(base, 12):  # the same text under another (neighbouring) label
        other = rng.choice([l for l in labels if l != row["category"] and l.split("_")[0] == row["category"].split("_")[0]] or labels)
        planted.append({"text": row["text"], "category": other})
    for row in rng.sample(eval_rows, 15):  # eval rows leaked into train, exact and near
        planted.append(dict(row))
    for row in rng.sample(eval_rows, 15):
        planted.append({"text": near_variant(row["text"], rng), "category": row["category"]})
    for n, row in enumerate(rng.sample(base, 25)):  # PII: redacted, not dropped
        planted.append({"text": row["text"].rstrip() + PII[n % len(PII)].format(n=n), "category": row["category"]})
    for text in HARMFUL:
        planted.append({"text": text, "category": rng.choice(["card_arrival", "terminate_account", "Refund_not_showing_up"])})
    for text in TOO_SHORT + REPETITIVE:
        planted.append({"text": text, "category": rng.choice(labels)})
    for row in rng.sample(base, 2):  # too long for the quality bound, under the ingest size bound
        planted.append({"text": (row["text"] + " ") * 40, "category": row["category"]})
    rows = base + planted
    rng.shuffle(rows)

    # 80 % JSONL, 20 % CSV, each with its own broken records.
    cut = int(len(rows) * 0.8)
    jsonl_rows, csv_rows = rows[:cut], rows[cut:]
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in jsonl_rows]
    broken = [
        b'{"text": "Where is my new card? It has been two weeks", "categ',  # truncated line
        b'{"text": "How do I verify my identity?"}',  # missing field
        b'{"text": 12345, "category": "card_arrival"}',  # wrong type
        b'{"text": "I need to change my PIN", "category": ["change_pin"]}',  # wrong type
        b'{"text": "", "category": "card_arrival"}',  # empty text
        b'{"text": "   \\n\\t ", "category": "exchange_rate"}',  # whitespace only
        b'{"text": null, "category": "exchange_rate"}',  # null text
        b'{"text": "Why was my card \xff\xfe declined?", "category": "declined_card_payment"}',  # invalid UTF-8
        b'{"text": "' + b"I want a refund " * 1500 + b'", "category": "request_refund"}',  # 24 KB: over the size bound
        b'{"text": "My card has not arrived yet", "category": "card_arrivall"}',  # unknown label
        b'{"text": "What is the exchange rate?", "category": ""}',  # empty label
        b'[1, 2, 3]',  # not an object
        b'not json at all',
    ]
    for line in broken:
        lines.insert(rng.randrange(len(lines)), line)
    lines.insert(rng.randrange(len(lines)), b"")  # a stray blank line
    out = HERE / "banking77" / "raw"
    out.mkdir(parents=True, exist_ok=True)
    (out / "messages.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["text", "category"])
    for r in csv_rows:
        writer.writerow([r["text"], r["category"]])
    writer.writerow(["My top-up failed.\nI tried twice\nand it still says pending", "top_up_failed"])  # quoted newlines
    writer.writerow(["Can I get a card in another currency?", "fiat_currency_support", "extra"])  # too many fields
    writer.writerow(["How long does a transfer take?"])  # too few fields
    (out / "legacy_export.csv").write_text(buf.getvalue(), encoding="utf-8")

    with open(HERE / "banking77" / "eval.jsonl", "w", encoding="utf-8") as fh:
        for r in eval_rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    (HERE / "banking77" / "categories.json").write_text(json.dumps(sorted(labels), indent=1) + "\n")
    return order, {r["text"] for r in rows} | {r["text"] for r in eval_rows}


# The ticket archive: more real messages per intent, most for the rarer ones (8 for each of the 7
# rarest, then 35 for the 8th rarest down to 10 for the most common), so that a first run has
# enough rows per intent to train a model worth having (docs/training.md); the 7 rarest stay the
# smallest (~20 rows against up to ~100) and still need synthesis to reach the balance floor.
ARCHIVE_RAREST, ARCHIVE_RAREST_ROWS = 7, 8


def build_banking77_archive(shared: Path, rng: random.Random, order: list[str], used: set[str]) -> None:
    """raw/ticket_archive.jsonl: clean official train messages the sample does not hold, one more source."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for row in read_csv(shared / "banking77" / "train.csv"):
        if row["text"] not in used:
            by_label[row["category"]].append(row["text"])
    rows = []
    for k, label in enumerate(order):
        n = min(len(by_label[label]), ARCHIVE_RAREST_ROWS if k < ARCHIVE_RAREST else round(38 - 28 * k / 76))
        rows += [{"text": text, "category": label} for text in rng.sample(sorted(by_label[label]), n)]
    rng.shuffle(rows)
    with open(HERE / "banking77" / "raw" / "ticket_archive.jsonl", "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def build_viggo(shared: Path, rng: random.Random) -> None:
    src = shared / "viggo"
    train = read_csv(src / "train.csv")
    test = read_csv(src / "test.csv")
    rows = [{"text": r["ref"], "mr": r["mr"]} for r in rng.sample(train, 1200)]
    rows += [dict(r) for r in rng.sample(rows, 20)]  # exact duplicates
    rows += [{"text": near_variant(r["text"], rng), "mr": r["mr"]} for r in rng.sample(rows, 20)]
    rows += [
        {"text": "Is there a game you like?", "mr": "request(specifier[good]"},  # unbalanced MR
        {"text": "Tell me about Halo.", "mr": "describe_everything(name[Halo])"},  # unknown dialogue act
        {"text": "", "mr": "inform(name[Portal])"},  # empty text
        {"text": "What do you think of it?", "mr": ""},  # empty output
    ]
    rng.shuffle(rows)
    out = HERE / "viggo" / "raw"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "viggo_train.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "mr"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    with open(HERE / "viggo" / "eval.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "mr"], lineterminator="\n")
        writer.writeheader()
        writer.writerows({"text": r["ref"], "mr": r["mr"]} for r in rng.sample(test, 150))


# In the imbalanced variant the count depends on the domain: banking 25, utility 50,
# kitchen_and_dining 75, travel 100 queries per intent. Six intents of each give all four
# levels, and 24 labels the bundled 135M model can still choose from in the label check.
CLINC150_DOMAINS = ["banking", "utility", "kitchen_and_dining", "travel"]
CLINC150_PER_DOMAIN = 6


def build_clinc150(shared: Path, rng: random.Random) -> None:
    src = shared / "clinc150"
    data = json.loads((src / "data_imbalanced.json").read_text())
    domains = json.loads((src / "domains.json").read_text())
    intents = sorted(i for d in CLINC150_DOMAINS for i in rng.sample(sorted(domains[d]), CLINC150_PER_DOMAIN))
    keep = set(intents)
    out = HERE / "clinc150"
    (out / "raw").mkdir(parents=True, exist_ok=True)
    with open(out / "raw" / "train_imbalanced.jsonl", "w", encoding="utf-8") as fh:
        for text, intent in data["train"]:  # the source's order, every row of these intents
            if intent in keep:
                fh.write(json.dumps({"text": text, "intent": intent}, ensure_ascii=False) + "\n")
    test_by_intent: dict[str, list[str]] = defaultdict(list)
    for text, intent in data["test"]:
        if intent in keep:
            test_by_intent[intent].append(text)
    with open(out / "eval.jsonl", "w", encoding="utf-8") as fh:
        for intent in intents:
            for text in rng.sample(test_by_intent[intent], 10):
                fh.write(json.dumps({"text": text, "intent": intent}, ensure_ascii=False) + "\n")
    (out / "intents.json").write_text(json.dumps(intents, indent=1) + "\n")


def copy_banking77_full(shared: Path) -> None:
    """The official train and test splits, byte for byte: the issue's accuracy benchmark
    (configs/banking77_full.yaml) trains on all of train and evaluates on all of test."""
    out = HERE / "banking77" / "full"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train.csv", "test.csv"):
        shutil.copyfile(shared / "banking77" / name, out / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    args = parser.parse_args()
    order, used = build_banking77(args.shared, random.Random(SEED))
    build_banking77_archive(args.shared, random.Random(SEED + 3), order, used)
    copy_banking77_full(args.shared)
    build_viggo(args.shared, random.Random(SEED + 1))
    build_clinc150(args.shared, random.Random(SEED + 2))


if __name__ == "__main__":
    main()
