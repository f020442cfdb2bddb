"""Speaker-disjoint splits: whole groups (voice identities) go to train, valid or test."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from .audio import rng_for


def assign_splits(
    groups: Mapping[str, tuple[str, float]], seed: int, valid_frac: float, test_frac: float
) -> dict[str, str]:
    """group -> split, from group -> (family, weight).

    Within each family the groups, in a seeded random order, fill test and then valid until
    each holds its fraction of the family's weight (utterances; 1 per TTS voice), at least one
    group each when the family has three or more. A group heavier than the held-out share it
    would fill (e.g. a main character with a third of the lines) stays in train."""
    by_family: dict[str, list[str]] = defaultdict(list)
    for group, (family, _) in sorted(groups.items()):
        by_family[family].append(group)
    split_of = {}
    for family, members in sorted(by_family.items()):
        order = [members[i] for i in rng_for(seed, "split", family).permutation(len(members))]
        total = sum(groups[g][1] for g in order)
        for split, frac in (("test", test_frac), ("valid", valid_frac)):
            if len(order) < 3:
                break
            target, filled = frac * total, 0.0
            for g in order:
                if g in split_of or filled >= target:
                    continue
                weight = groups[g][1]
                if filled > 0 and filled + weight > 1.5 * target:
                    continue  # would overshoot: try a lighter group
                if weight > 2.0 * max(target, 1.0) and weight > 1.0:
                    continue  # too heavy for a held-out split
                split_of[g] = split
                filled += weight
            if filled == 0:  # every group too heavy: the lightest one still goes
                free = [g for g in order if g not in split_of]
                if len(free) > 1:
                    split_of[min(free, key=lambda g: groups[g][1])] = split
        for g in order:
            split_of.setdefault(g, "train")
    return split_of


def groups_in_several_splits(rows: Iterable[dict]) -> dict[str, list[str]]:
    """group -> its splits, for every speech group of manifest rows found in more than one."""
    splits: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r["kind"] == "speech":
            splits[r["group"]].add(r["split"])
    return {g: sorted(s) for g, s in sorted(splits.items()) if len(s) > 1}
