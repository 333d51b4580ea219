"""The built-in synthetic world's vocabulary: real first names, verbs, adjectives, places.

Every word is one token under the built-in word-level tokenizer, so a cue, a key and an answer
are each exactly one position in the stream.
"""

from __future__ import annotations

FEMININE_NAMES = (
    "Mary Anna Emma Sue Lily Mia Sara Lucy Emily Grace Chloe Ella Zoe Ruby Alice Clara Eva Julia "
    "Laura Nora Olivia Sophie Hannah Amy Kate Rose Jane Ivy Lena Maya Nina Paula Rita Tina Vera "
    "Wendy Helen Irene Diana Fiona Gina Holly Jenny Karen Linda Megan Nancy Olga Penny Rachel "
    "Sally Tara Ursula Violet Yara Zara Beth Cora Dora Edith"
).split()
MASCULINE_NAMES = (
    "Tom John Jack Sam Max Leo Ben Tim Paul Mark Adam Alex Bob Carl Dan Eric Fred Greg Hank Ian "
    "Jake Kevin Luke Mike Nick Oscar Pete Ray Steve Ted Victor Walter Zack Bill Chris David Frank "
    "George Henry Isaac James Kyle Liam Noah Owen Peter Ryan Simon Tony Hugo Vince Will Xavier "
    "Yusuf Abe Brian Colin Derek Evan Felix"
).split()
VERBS = (
    "cried laughed smiled jumped sang danced waited shouted ran slept ate stopped hid left stayed "
    "sighed froze blushed nodded screamed yelled whispered clapped cheered frowned grinned gasped "
    "shivered trembled panicked paused rested wept wandered hurried stumbled giggled sulked winked "
    "napped"
).split()
ADJECTIVES = (
    "sad happy tired angry scared proud calm hungry sleepy bored cold warm sick glad upset shy "
    "brave lonely nervous excited sorry worried curious grumpy cheerful quiet busy ready late lucky"
).split()
PLACES = (
    "park school beach farm shop forest river lake garden zoo market library house castle bakery "
    "station village hill pond field"
).split()
# Subjects with no gender cue: fillers use them, and the prior-pull (neutral) probes ask for a
# pronoun after them.
NEUTRAL_PEOPLE = "teacher child doctor baker friend neighbor cook farmer".split()
SINGULAR_NOUNS = (
    "dog cat bird horse cow duck frog bear fox goat pig lion rabbit tiger owl bee ant hen crab "
    "snake whale seal mole toad"
).split()
PLURAL_NOUNS = (
    "dogs cats birds horses cows ducks frogs bears foxes goats pigs lions rabbits tigers owls bees "
    "ants hens crabs snakes whales seals moles toads"
).split()
# Nouns whose plural is the singular: no number cue. Used by fillers and neutral probes.
NEUTRAL_NOUNS = "sheep fish deer moose".split()
FUNCTION_WORDS = "because at the went to saw . she he was were".split()
# Reserved for rescue injections (interventions): cue words and frame words that no built-in corpus
# and no generated probe uses, so injected evidence is disjoint from every probe by construction.
# They come last in the id order, so adding them left every other word's id unchanged.
RESCUE_FEMININE_NAMES = (
    "Ava Bella Daisy Elsa Flora Gemma Hazel Isla Jade Kira Luna Mabel Nell Opal Pearl Ruth Stella Thea Una Willa"
).split()
RESCUE_MASCULINE_NAMES = (
    "Aaron Bruno Caleb Dylan Elias Finn Gavin Harvey Igor Jonah Karl Lars Milo Neil Otto Quentin Rufus Seth Troy Wade"
).split()
RESCUE_SINGULAR_NOUNS = "mouse wolf calf goose ox lamb mule pony camel zebra monkey otter".split()
RESCUE_PLURAL_NOUNS = "mice wolves calves geese oxen lambs mules ponies camels zebras monkeys otters".split()
RESCUE_FRAME_WORDS = "so felt near".split()
SPECIAL_TOKENS = ["<pad>", "<bos>", "<unk>"]
PAD, BOS, UNK = SPECIAL_TOKENS


def all_words() -> list[str]:
    """Every word of the world, specials first, in a fixed order (the tokenizer's id order)."""
    groups = [
        SPECIAL_TOKENS, FUNCTION_WORDS, FEMININE_NAMES, MASCULINE_NAMES, VERBS, ADJECTIVES, PLACES,
        NEUTRAL_PEOPLE, SINGULAR_NOUNS, PLURAL_NOUNS, NEUTRAL_NOUNS,
        RESCUE_FEMININE_NAMES, RESCUE_MASCULINE_NAMES, RESCUE_SINGULAR_NOUNS, RESCUE_PLURAL_NOUNS,
        RESCUE_FRAME_WORDS,
    ]
    out: list[str] = []
    for g in groups:
        for w in g:
            if w not in out:
                out.append(w)
    return out


assert len(FEMININE_NAMES) == 60 and len(MASCULINE_NAMES) == 60, "60 names per gender"
assert len(VERBS) == 40 and len(ADJECTIVES) == 30 and len(PLACES) == 20
assert len(SINGULAR_NOUNS) == len(PLURAL_NOUNS)
assert len(RESCUE_SINGULAR_NOUNS) == len(RESCUE_PLURAL_NOUNS)
_BASE = set(FEMININE_NAMES + MASCULINE_NAMES + SINGULAR_NOUNS + PLURAL_NOUNS + NEUTRAL_NOUNS + FUNCTION_WORDS)
assert not _BASE & set(RESCUE_FEMININE_NAMES + RESCUE_MASCULINE_NAMES + RESCUE_SINGULAR_NOUNS
                       + RESCUE_PLURAL_NOUNS + RESCUE_FRAME_WORDS), "rescue words must be new words"
