"""Generate ``workers/training/data/imagenet_taxonomy.json``: ImageNet-1k classes + ancestors.

ImageNet class ids are WordNet 3.0 noun synsets, so a class's hypernym chain gives broader tags
("tabby" -> "cat", "feline", "mammal", "animal") that a CMS vocabulary is more likely to use.
The output is committed to the repository, so building models needs neither timm nor WordNet;
rerun this only to change the pruning rules below::

    pip download timm --no-deps -d /tmp/timm
    apt-get install -y wordnet-base
    python -m workers.training.build.imagenet_taxonomy --timm-wheel /tmp/timm/timm-*.whl

Only the ordered list of 1000 wnids is read from the timm wheel (never imported: it does not load
next to our torch); names and hypernyms come from WordNet itself.

Which of these parents a photo's tags show is decided when serving, by
``workers/tagging/concepts.py`` (abstract nodes, single-child links, the curated list: see
``docs/image-tags.md``), so models built from an older file get the same tags.
"""

from __future__ import annotations

import argparse
import json
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

from workers.tagging.concepts import NEVER_TAGS

SYNSETS_IN_WHEEL = "timm/data/_info/imagenet_synsets.txt"
DEFAULT_WORDNET = Path("/usr/share/wordnet/data.noun")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "imagenet_taxonomy.json"

# Ancestors that say nothing a CMS user would search for: the top of the tree, abstract
# groupings ("instrumentality", "commodity") and zoological ranks nobody tags photos with
# ("chordate", "diapsid"). Matched on the concept's first lemma, after normalisation.
_DROP_TEXT = """
    entity; physical entity; object; whole; artifact; living thing; organism; abstraction;
    relation; part; piece; agent; causal agent; matter; substance; solid; fluid; system;
    instrumentality; device; container; covering; protective covering; conveyance; commodity;
    consumer goods; durables; article; ware; support; structure; mechanism; mechanical device;
    restraint; obstruction; barrier; establishment; mercantile establishment; place of business;
    natural object; plant part; plant organ; reproductive structure; implement; equipment;
    instrument; furnishing; nutriment; foodstuff; produce; craft; vessel; game; domestic animal;
    chordate; vertebrate; placental; aquatic vertebrate; diapsid; anapsid; saurian; teleost fish;
    bony fish; soft-finned fish; spiny-finned fish; cartilaginous fish; elasmobranch; oscine;
    passerine; metatherian; even-toed ungulate; odd-toed ungulate; ungulate; bovid; ruminant;
    colubrid snake; decapod crustacean; lepidopterous insect; phasianid; anseriform bird;
    coelenterate; leporid; lagomorph; musteline mammal; gallinaceous bird; anthropoid ape;
    anthropoid; hominid; old world monkey; new world monkey; elapid; arthropod; invertebrate;
    being; unit; artefact; creation; product; psychological feature; attribute; group;
    collection; whole thing; component; constituent; element; region; location; point;
    geological formation; natural elevation; formation; thing; material; instrumentation;
    drug; drug of abuse; heavier-than-air craft; spermatophyte; angiosperm; vascular plant;
    cypriniform fish; self-propelled vehicle; starches; runner; defensive structure
    """
# Serving never shows NEVER_TAGS either; leaving them out of the file keeps it to what can show.
DROP = frozenset(s.strip() for s in _DROP_TEXT.split(";")) | NEVER_TAGS

# The first lemma collides for three pairs of classes; give each a distinct, readable tag.
NAME_OVERRIDES = {
    "n02012849": "crane (bird)",
    "n03126707": "crane (machine)",
    "n02113186": "cardigan welsh corgi",
    "n02963159": "cardigan",
    "n03710637": "maillot",
    "n03710721": "tank suit",
}

# ImageNet's "cup" (n07930864) is WordNet's punch served in a cup, but its photos are of cups:
# take the parents of the container sense, not "alcohol" and "drug of abuse".
PARENT_OVERRIDES = {"n07930864": "03147509"}


def normalise(lemma: str) -> str:
    return lemma.lower().replace("_", " ")


def read_wordnet_nouns(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """offset -> (lemmas, hypernym offsets), from WordNet's ``data.noun`` (format: wndb(5))."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    with path.open(encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):  # licence header
                continue
            fields = line.split(" | ", 1)[0].split()
            word_count = int(fields[3], 16)
            lemmas = [fields[4 + 2 * i] for i in range(word_count)]
            i = 4 + 2 * word_count
            pointer_count = int(fields[i])
            i += 1
            hypernyms = []
            for _ in range(pointer_count):
                symbol, offset, pos = fields[i], fields[i + 1], fields[i + 2]
                i += 4
                # "@i" (instance hypernym) matters for a few classes such as named dog breeds.
                if symbol in ("@", "@i") and pos == "n":
                    hypernyms.append(offset)
            out[fields[0]] = (lemmas, hypernyms)
    return out


def ancestors(offset: str, nouns: dict[str, tuple[list[str], list[str]]]) -> list[str]:
    """All hypernym offsets, most specific first.

    Ordered by the longest path from the class, not the shortest: a shortcut such as
    tabby -> domestic animal -> animal would otherwise put "animal" before "carnivore".
    """
    depth: dict[str, int] = {}

    def visit(o: str, d: int) -> None:
        if depth.get(o, -1) >= d:
            return
        depth[o] = d
        for parent in nouns[o][1]:
            visit(parent, d + 1)

    for parent in nouns[offset][1]:
        visit(parent, 1)
    return sorted(depth, key=lambda o: (depth[o], o))


def build_taxonomy(
    wnids: list[str], nouns: dict[str, tuple[list[str], list[str]]]
) -> dict[str, Any]:
    if len(wnids) != 1000 or len(set(wnids)) != 1000:
        raise ValueError(f"expected 1000 distinct ImageNet wnids, got {len(set(wnids))}")
    classes: list[dict[str, Any]] = []
    for wnid in wnids:
        offset = wnid[1:]
        name = NAME_OVERRIDES.get(wnid) or normalise(nouns[offset][0][0])
        names: list[str] = []
        chain = ancestors(offset, nouns)
        if wnid in PARENT_OVERRIDES:
            alt = PARENT_OVERRIDES[wnid]
            chain = [alt, *ancestors(alt, nouns)]
        for o in chain:
            concept = normalise(nouns[o][0][0])
            if concept not in DROP and concept != name and concept not in names:
                names.append(concept)
        classes.append({"wnid": wnid, "name": name, "ancestors": names})
    counts = Counter(c["name"] for c in classes)
    duplicates = sorted(n for n, k in counts.items() if k > 1)
    if duplicates:
        raise ValueError(f"class names are not unique: {duplicates}")
    return {
        "source": "ImageNet-1k class order (timm imagenet_synsets.txt); WordNet 3.0 hypernyms",
        "license": "WordNet 3.0 licence (Princeton University), permissive",
        "classes": classes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--timm-wheel", type=Path, help="a downloaded timm wheel (.whl)")
    src.add_argument("--synsets", type=Path, help="imagenet_synsets.txt, one wnid per line")
    parser.add_argument("--wordnet", type=Path, default=DEFAULT_WORDNET)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.timm_wheel:
        with zipfile.ZipFile(args.timm_wheel) as wheel:
            text = wheel.read(SYNSETS_IN_WHEEL).decode()
    else:
        text = args.synsets.read_text()
    wnids = [line.strip() for line in text.splitlines() if line.strip()]
    taxonomy = build_taxonomy(wnids, read_wordnet_nouns(args.wordnet))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # One class per line: small, and diffs stay readable when the pruning rules change.
    lines = ",\n".join(json.dumps(c, separators=(",", ":")) for c in taxonomy["classes"])
    head = {k: v for k, v in taxonomy.items() if k != "classes"}
    body = json.dumps(head, indent=1)[:-2] + ',\n "classes": [\n' + lines + "\n ]\n}\n"
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(body)
    tmp.replace(args.out)
    concepts = {a for c in taxonomy["classes"] for a in c["ancestors"]}
    print(f"wrote {args.out}: {len(wnids)} classes, {len(concepts)} parent concepts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
