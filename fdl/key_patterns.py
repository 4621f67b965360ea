"""Keys long enough yet guessable: too few different characters, a short unit repeated, or a run
along the alphabet, the digits or a keyboard row (``aaaaaaaaaaaaaaaa``, ``passwordpassword``,
``1234567890123456``, ``qwertyuiopasdfgh``). A dictionary attack tries these first; the limit on
failed keys per address slows it only as much as the attacker has addresses. Random keys
(``openssl rand -hex 8`` and longer, ``secrets.token_urlsafe``) are refused too rarely to matter:
16 random hex characters have fewer than 4 different ones about once in 10**9 keys, and steps along
a sequence for three quarters of their length far less often."""

from __future__ import annotations

from itertools import pairwise

# The fewest different characters a key may have.
MIN_DISTINCT = 4
# Sequences that people type: a key that steps along one of them (forwards or backwards, the
# ends joined) for this share of its neighbouring characters is refused.
SEQUENCES = ("0123456789", "abcdefghijklmnopqrstuvwxyz", "qwertyuiopasdfghjklzxcvbnm")
RUN_SHARE = 0.75


def _repeated_unit(key: str) -> int | None:
    """The length of the shortest unit whose repetition (the last one possibly cut short) is
    ``key``, when it is at most half of the key."""
    for size in range(1, len(key) // 2 + 1):
        if all(key[i] == key[i % size] for i in range(size, len(key))):
            return size
    return None


def _steps_along(key: str, sequence: str) -> int:
    """How many neighbouring pairs of ``key`` are one step apart along ``sequence``."""
    position = {char: index for index, char in enumerate(sequence)}
    steps = 0
    for first, second in pairwise(key):
        if first in position and second in position:
            apart = (position[second] - position[first]) % len(sequence)
            steps += apart in (1, len(sequence) - 1)
    return steps


def predictable_reason(key: str) -> str | None:
    """Why ``key`` is guessable, or None. Never quotes the key."""
    distinct = len(set(key))
    if distinct < MIN_DISTINCT:
        return f"uses only {distinct} different characters; a random key uses many more"
    if (unit := _repeated_unit(key)) is not None:
        return f"repeats a unit of {unit} characters"
    lowered = key.lower()
    pairs = len(key) - 1
    if any(_steps_along(lowered, sequence) >= RUN_SHARE * pairs for sequence in SEQUENCES):
        return "runs along the alphabet, the digits or a keyboard row"
    return None
