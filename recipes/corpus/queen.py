"""Flight of the Amazon Queen (Debian `flight-of-the-amazon-queen`): the voice-acted lines.

The package holds one ScummVM "rebuilt" Queen data file, `queen.1c`:

    "QTBL"  version string (6 bytes, e.g. "CEM10\\0")  2 bytes  compression (1 byte: 1 = MP3)
    entry count (uint16 BE), then per entry: name (12 bytes, NUL-padded), bundle (1 byte),
    offset (uint32 BE), size (uint32 BE)

Speech entries are `*.SB` files (MP3 at 11025 Hz in the compressed build). Who speaks a line
is encoded in its name:

- dialogue lines `KKHHHHJn.SB` / `KKHHHHPn.SB`: KK is the talk key of a dialogue file
  (`NAME.DOG`, 20-byte header, then levelMax, uniqueKey, talkKey as int16 BE); `J` = Joe,
  `P` = the person of that dialogue file (e.g. `SPARKY3.DOG` -> Sparky);
- `JOEnnnnn.SB`: Joe's remarks about objects.

Cut-scene lines (`CnnX_nnn.SB`, ...) do not encode the speaker and are left out.
"""

from __future__ import annotations

import re
import struct
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .audio import rng_for
from .errors import CorpusError
from .speech import Speaker

QUEEN_FILE = Path("/usr/share/scummvm/flight-of-the-amazon-queen/queen.1c")
DOG_HEADER_BYTES = 20
ENTRY_BYTES = 21
_DIALOGUE_LINE = re.compile(r"(?P<key>[0-9 ]{2})[0-9A-FSX ]{4}(?P<who>[JP])\d\.SB")
_JOE_REMARK = re.compile(r"JOE\d+\.SB")


@dataclass(frozen=True)
class QueenEntry:
    name: str  # e.g. "020006J1.SB"
    offset: int  # byte offset in the data file
    size: int  # bytes


@dataclass(frozen=True)
class QueenLine:
    entry: QueenEntry
    character: str  # lower case, e.g. "joe", "sparky"


def read_queen_table(path: Path) -> tuple[str, int, dict[str, QueenEntry]]:
    """(version, compression, name -> entry) of a rebuilt Queen data file.

    Raises CorpusError naming the file when it is not a rebuilt table or is truncated."""
    try:
        with path.open("rb") as fh:
            head = fh.read(15)
            if len(head) < 15 or head[:4] != b"QTBL":
                raise CorpusError(f"{path}: not a ScummVM rebuilt Queen data file (no QTBL table)")
            version = head[4:10].split(b"\0")[0].decode("ascii", "replace")
            compression = head[12]
            (count,) = struct.unpack(">H", head[13:15])
            table = fh.read(count * ENTRY_BYTES)
            fh.seek(0, 2)
            file_size = fh.tell()
    except OSError as e:
        raise CorpusError(f"{path}: cannot read ({e.strerror})") from None
    if len(table) < count * ENTRY_BYTES:
        raise CorpusError(f"{path}: resource table truncated ({count} entries announced)")
    entries = {}
    for k in range(count):
        raw = table[k * ENTRY_BYTES : (k + 1) * ENTRY_BYTES]
        name = raw[:12].split(b"\0")[0].decode("ascii", "replace")
        _bundle, offset, size = struct.unpack(">BII", raw[12:])
        if offset + size > file_size:
            raise CorpusError(f"{path}: entry {name} points past the end of the file")
        entries[name] = QueenEntry(name, offset, size)
    return version, compression, entries


def read_entry(path: Path, entry: QueenEntry) -> bytes:
    with path.open("rb") as fh:
        fh.seek(entry.offset)
        return fh.read(entry.size)


def character_of_dialogue(dog_name: str) -> str:
    """Character of a dialogue file: "SPARKY3.DOG" -> "sparky", "FAYE2.DOG" -> "faye"."""
    return re.sub(r"\d+$", "", dog_name.removesuffix(".DOG")).lower()


def talk_keys(path: Path, entries: dict[str, QueenEntry]) -> dict[int, str]:
    """talk key -> character, from the dialogue files (*.DOG) of the data file."""
    keys = {}
    for name, entry in sorted(entries.items()):
        if name.endswith(".DOG"):
            head = read_entry(path, entry)[DOG_HEADER_BYTES : DOG_HEADER_BYTES + 6]
            if len(head) < 6:
                raise CorpusError(f"{path}: dialogue file {name} truncated")
            _levels, _unique, key = struct.unpack(">hhh", head)
            keys[key] = character_of_dialogue(name)
    return keys


def speaking_character(name: str, keys: dict[int, str]) -> str | None:
    """Character speaking the speech file `name`, or None when the name does not tell."""
    if _JOE_REMARK.fullmatch(name):
        return "joe"
    m = _DIALOGUE_LINE.fullmatch(name)
    if m is None:
        return None
    if m["who"] == "J":
        return "joe"
    return keys.get(int(m["key"].replace(" ", "0")))


def queen_lines(path: Path = QUEEN_FILE) -> list[QueenLine]:
    """The speech lines of the data file whose speaker is known, sorted by name.

    [] when the file is absent; CorpusError when it is there but unreadable or not MP3."""
    if not path.is_file():
        return []
    _version, compression, entries = read_queen_table(path)
    speech = [e for name, e in sorted(entries.items()) if name.endswith(".SB")]
    if speech and compression != 1:
        raise CorpusError(f"{path}: speech compression {compression} is not MP3 (1)")
    keys = talk_keys(path, entries)
    lines = []
    for entry in speech:
        character = speaking_character(entry.name, keys)
        if character is not None:
            lines.append(QueenLine(entry, character))
    return lines


def lines_by_character(lines: list[QueenLine]) -> dict[str, list[QueenLine]]:
    by_character: dict[str, list[QueenLine]] = defaultdict(list)
    for line in lines:
        by_character[line.character].append(line)
    return dict(sorted(by_character.items()))


def plan_queen(
    seed: int, max_characters: int | None, max_utts: int | None, path: Path = QUEEN_FILE
) -> list[tuple[Speaker, list[QueenLine]]]:
    """One speaker per character (group `fotaq-<character>`) with its lines, in name order."""
    by_character = lines_by_character(queen_lines(path))
    names = sorted(by_character)
    if max_characters is not None:
        rng = rng_for(seed, "fotaq-plan")
        names = [names[i] for i in sorted(rng.permutation(len(names))[:max_characters])]
    plans = []
    for name in names:
        spk = Speaker(f"fotaq_{name}", f"fotaq-{name}", "fotaq", "en")
        plans.append((spk, by_character[name][:max_utts]))
    return plans
