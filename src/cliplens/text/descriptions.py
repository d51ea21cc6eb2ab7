"""A pool of short image descriptions, composed from our own word lists and sentence patterns.

TextSpan explains heads with a few thousand short descriptions of what images show (objects, colours, counts, places,
styles, textures, weather, light). We ship no copy of anyone's list: every description here is built from the
patterns below. Each pattern expands to all of its word combinations; those are put in a fixed pseudo-random order
(by SHA-256 of the text, so the order never depends on the Python version or hash seed) and the patterns are then
interleaved round-robin. Any prefix of the pool is therefore balanced across patterns, and a smaller pool is always
a prefix of a larger one.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Callable, Iterator

COLOURS = (
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray", "gold",
    "silver", "turquoise", "beige", "navy blue", "teal", "lavender", "crimson", "olive green",
)
SURFACE_MATERIALS = ("brick", "wooden", "stone", "metal", "tiled", "concrete", "glass", "marble")
SURFACES = ("wall", "floor", "door", "fence", "roof", "staircase")
OBJECT_MATERIALS = (
    "wooden", "metal", "glass", "plastic", "ceramic", "leather", "woolen", "paper", "marble", "bamboo", "copper",
    "steel", "velvet", "straw", "clay", "rubber",
)
CONDITIONS = (
    "shiny", "rusty", "dusty", "polished", "scratched", "wet", "worn", "cracked", "brand new", "broken", "tiny",
    "giant", "old", "folded",
)
OBJECTS = (
    "chair", "table", "lamp", "cup", "bottle", "vase", "umbrella", "bicycle", "car", "bus", "boat", "clock", "book",
    "shoe", "hat", "bag", "guitar", "teapot", "kite", "balloon", "door", "bench", "bowl", "spoon", "key", "candle",
    "mug", "backpack", "suitcase", "ball", "box", "truck", "train", "airplane", "phone", "laptop", "scarf", "sofa",
    "bed", "mirror", "basket", "bucket", "ladder", "pillow", "helmet", "watch", "piano", "toaster", "tent", "sign",
)
SHAPED_THINGS = (
    "balloon", "kite", "pillow", "box", "cookie", "mirror", "sign", "clock", "candle", "cake", "window", "pool",
    "necklace", "table", "rug", "lollipop",
)
SMALL_THINGS = (
    "apple", "banana", "lemon", "tomato", "pear", "peach", "egg", "cookie", "cupcake", "carrot", "potato", "onion",
    "mushroom", "coin", "pencil", "candle", "cup", "bottle", "book", "shoe", "key", "ball", "candy", "glass", "plate",
    "toy car", "rubber duck", "pine cone", "seashell", "leaf",
)
ANIMALS = (
    "dog", "cat", "horse", "cow", "sheep", "goat", "pig", "chicken", "duck", "goose", "rabbit", "mouse", "fox",
    "wolf", "bear", "deer", "elephant", "giraffe", "zebra", "lion", "tiger", "monkey", "owl", "eagle", "parrot",
    "penguin", "swan", "fish", "frog", "turtle", "snake", "butterfly", "bee", "camel", "dolphin", "whale",
    "squirrel", "crab", "pigeon", "kangaroo",
)
ANIMAL_SETTINGS = (
    "on a beach", "in a field", "in the snow", "on a sofa", "in a forest", "by a river", "in a cage", "on a road",
    "in tall grass", "under a tree", "in the water", "on a rock", "in a garden", "at a zoo", "on a farm",
)
ANIMAL_ACTIONS = (
    "sleeping", "running", "eating", "jumping", "resting in the shade", "looking at the camera", "standing in the rain",
    "lying in the grass", "drinking water", "playing with a ball", "hiding behind a bush", "walking on a path",
)
COUNTS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "a dozen", "many", "a few")
HOLDERS = (
    "on a table", "on a plate", "on a wooden floor", "in a basket", "on the grass", "in the snow", "on a shelf",
    "on a windowsill", "in a bowl", "on the sand", "in a row", "in a pile",
)
SCENES = (
    "beach", "harbor", "forest", "desert", "mountain lake", "city street", "village square", "farm", "garden", "park",
    "parking lot", "train station", "airport", "market", "kitchen", "living room", "bedroom", "library",
    "classroom", "office", "restaurant", "cafe", "church", "castle", "bridge", "highway", "river", "waterfall",
    "canyon", "island", "lighthouse", "meadow", "vineyard", "jungle", "glacier", "volcano", "swimming pool",
    "playground", "stadium", "factory", "subway platform", "shopping mall", "museum", "bakery", "barn", "rooftop",
    "alley", "construction site", "harbor at low tide", "wheat field",
)
SCENE_STATES = (
    "empty", "crowded", "abandoned", "busy", "quiet", "flooded", "ruined", "colorful", "modern", "ancient", "tiny",
    "huge", "cozy", "messy", "tidy", "dark", "brightly lit", "deserted", "overgrown", "clean",
)
WEATHER = (
    "in the rain", "in heavy fog", "during a snowstorm", "covered in snow", "under a clear blue sky",
    "under dark storm clouds", "in a thunderstorm", "on a windy day", "after the rain", "in the mist",
    "during a heat wave", "under a rainbow",
)
LIGHTING = (
    "at sunset", "at sunrise", "at night", "at dusk", "at noon", "under street lights", "in golden hour light",
    "lit by candlelight", "in moonlight", "in harsh midday sun", "in soft morning light", "in neon light",
)
VIEWS = (
    "aerial view", "close-up", "wide shot", "panoramic view", "bird's-eye view", "distant view", "view from below",
    "view through a window", "blurry snapshot", "view from a car window",
)
PLACE_SCENES = (
    "street", "market", "village", "beach", "temple", "harbor", "house", "train station", "restaurant",
    "mountain road", "park", "rooftop garden", "school", "farm",
)
PLACES = (
    "Japan", "India", "Italy", "Mexico", "Egypt", "Brazil", "Kenya", "Norway", "China", "France", "Morocco", "Peru",
    "Iceland", "Greece", "Vietnam", "Turkey", "Australia", "Canada", "Russia", "Thailand", "Spain", "Scotland",
    "Argentina", "Indonesia", "Nepal", "Cuba", "Paris", "Tokyo", "New York", "London", "Venice", "Istanbul", "Cairo",
    "Rio de Janeiro", "Sydney", "Mumbai", "the Alps", "the Sahara", "the Arctic", "the Amazon",
)
STYLES = (
    "watercolor painting", "oil painting", "pencil sketch", "charcoal drawing", "cartoon", "comic book illustration",
    "3D rendering", "pixel art image", "mosaic", "stained glass window", "embroidery", "woodcut print", "photograph",
    "black and white photograph", "long exposure photo", "low resolution photo", "tilt-shift photo", "infrared photo",
    "vintage postcard", "children's drawing", "graffiti mural", "origami model", "clay sculpture", "tattoo",
    "blueprint", "satellite image", "blurry photo", "sepia photograph", "neon sign", "chalk drawing",
)
PEOPLE = (
    "a child", "a woman", "a man", "an old man", "an old woman", "a group of friends", "a family", "a teenager",
    "a chef", "a doctor", "a farmer", "a firefighter", "a police officer", "a musician", "a soccer player",
    "a surfer", "a skier", "a dancer", "a painter", "a fisherman", "a nurse", "a baby", "a couple", "a soldier",
)
ACTIVITIES = (
    "riding a bicycle", "reading a book", "playing the guitar", "cooking dinner", "running in a park",
    "swimming in the sea", "climbing a mountain", "walking a dog", "eating ice cream", "taking a photo", "dancing",
    "sleeping", "laughing", "playing chess", "flying a kite", "painting a picture", "carrying groceries",
    "talking on the phone", "waiting for a bus", "fishing from a boat", "giving a speech", "playing in the snow",
)
SHAPES = (
    "circle", "square", "triangle", "star", "heart", "hexagon", "crescent", "diamond", "spiral", "arrow", "cross",
    "oval", "rectangle", "ring",
)
PATTERNS = ("striped", "checkered", "polka dot", "zigzag", "floral", "plaid", "geometric", "wavy", "honeycomb")
TEXTURE_SUBJECTS = (
    "tree bark", "rusty metal", "peeling paint", "wet sand", "cracked mud", "knitted wool", "crumpled paper",
    "a woven basket", "fish scales", "animal fur", "bird feathers", "polished marble", "brushed steel", "moss",
    "ice crystals", "soap bubbles", "pebbles", "a sponge", "rough concrete", "grass", "frost on glass", "lace",
    "denim", "corduroy", "snake skin", "water droplets", "coffee beans", "honeycomb", "cracked leather", "sea foam",
)
TEXTURE_FRAMES = ("a close-up of {}", "a macro photo of {}", "the texture of {}", "a seamless pattern of {}")
COLOUR_FRAMES = ("the color {}", "a photo with {} tones", "something {}", "everything is {}")
COLOURED_NOUNS = ("image", "background", "light", "sky", "room")

# Words whose article does not follow their first letter: "an hour", "a unicorn", "an X-ray".
_AN_BEFORE = ("hour", "honest", "heir", "x-ray")
_A_BEFORE = ("uni", "use", "usu", "one", "euro", "ufo", "ura")
_IRREGULAR_PLURALS = {
    "mouse": "mice", "sheep": "sheep", "fish": "fish", "deer": "deer", "goose": "geese", "wolf": "wolves",
    "leaf": "leaves", "potato": "potatoes", "tomato": "tomatoes", "glass": "glasses", "candy": "candies",
    "toy car": "toy cars", "rubber duck": "rubber ducks", "pine cone": "pine cones",
}


def article(phrase: str) -> str:
    """The phrase with "a" or "an" in front, chosen by sound for the words this module uses."""
    lowered = phrase.lower()
    if lowered.startswith(_AN_BEFORE):
        return f"an {phrase}"
    if lowered.startswith(_A_BEFORE):
        return f"a {phrase}"
    return f"{'an' if lowered[:1] in 'aeiou' else 'a'} {phrase}"


def plural(noun: str) -> str:
    """English plural of the nouns used here (regular rules plus a short table of exceptions)."""
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


Pattern = Callable[[], Iterator[str]]


def _coloured_objects() -> Iterator[str]:
    return (article(f"{colour} {thing}") for colour, thing in itertools.product(COLOURS, OBJECTS))


def _material_objects() -> Iterator[str]:
    return (article(f"{material} {thing}") for material, thing in itertools.product(OBJECT_MATERIALS, OBJECTS))


def _objects_in_condition() -> Iterator[str]:
    return (article(f"{condition} {thing}") for condition, thing in itertools.product(CONDITIONS, OBJECTS))


def _coloured_surfaces() -> Iterator[str]:
    triples = itertools.product(COLOURS, SURFACE_MATERIALS, SURFACES)
    return (article(f"{colour} {material} {surface}") for colour, material, surface in triples)


def _counted_animals() -> Iterator[str]:
    triples = itertools.product(COUNTS, ANIMALS, ANIMAL_SETTINGS)
    return (f"{count} {plural(animal)} {setting}" for count, animal, setting in triples)


def _animal_actions() -> Iterator[str]:
    return (f"{article(animal)} {action}" for animal, action in itertools.product(ANIMALS, ANIMAL_ACTIONS))


def _counted_things() -> Iterator[str]:
    triples = itertools.product(COUNTS, SMALL_THINGS, HOLDERS)
    return (f"{count} {plural(thing)} {holder}" for count, thing, holder in triples)


def _scene_states() -> Iterator[str]:
    return (article(f"{state} {scene}") for state, scene in itertools.product(SCENE_STATES, SCENES))


def _scene_weather() -> Iterator[str]:
    return (f"{article(scene)} {weather}" for scene, weather in itertools.product(SCENES, WEATHER))


def _scene_lighting() -> Iterator[str]:
    return (f"{article(scene)} {light}" for scene, light in itertools.product(SCENES, LIGHTING))


def _scene_views() -> Iterator[str]:
    return (f"{article(view)} of {article(scene)}" for view, scene in itertools.product(VIEWS, SCENES))


def _places() -> Iterator[str]:
    return (f"{article(scene)} in {place}" for scene, place in itertools.product(PLACE_SCENES, PLACES))


def _photos_taken_in() -> Iterator[str]:
    frames = ("a photo taken in {}", "a postcard from {}", "a typical street scene in {}", "a landscape in {}")
    return (frame.format(place) for frame, place in itertools.product(frames, PLACES))


def _styled_subjects() -> Iterator[str]:
    subjects = ANIMALS + OBJECTS + SCENES
    return (f"{article(style)} of {article(subject)}" for style, subject in itertools.product(STYLES, subjects))


def _people_activities() -> Iterator[str]:
    return (f"{person} {activity}" for person, activity in itertools.product(PEOPLE, ACTIVITIES))


def _coloured_shapes() -> Iterator[str]:
    triples = itertools.product(COLOURS, SHAPES, COLOURS)
    return (
        f"{article(f'{colour} {shape}')} on {article(f'{ground} background')}"
        for colour, shape, ground in triples
        if colour != ground
    )


def _counted_shapes() -> Iterator[str]:
    triples = itertools.product(COUNTS, COLOURS, SHAPES)
    return (f"{count} {colour} {plural(shape)}" for count, colour, shape in triples)


def _shaped_objects() -> Iterator[str]:
    return (article(f"{shape}-shaped {thing}") for shape, thing in itertools.product(SHAPES, SHAPED_THINGS))


def _patterns() -> Iterator[str]:
    return (
        f"{article(f'{pattern} pattern')} in {first} and {second}"
        for pattern, (first, second) in itertools.product(PATTERNS, itertools.combinations(COLOURS, 2))
    )


def _textures() -> Iterator[str]:
    return (frame.format(subject) for frame, subject in itertools.product(TEXTURE_FRAMES, TEXTURE_SUBJECTS))


def _colours() -> Iterator[str]:
    framed = (frame.format(colour) for frame, colour in itertools.product(COLOUR_FRAMES, COLOURS))
    described = (article(f"{colour} {noun}") for colour, noun in itertools.product(COLOURS, COLOURED_NOUNS))
    return itertools.chain(framed, described)


PATTERNS_IN_ORDER: tuple[Pattern, ...] = (
    _coloured_objects, _counted_animals, _styled_subjects, _scene_weather, _places, _textures, _people_activities,
    _coloured_surfaces, _scene_lighting, _counted_things, _coloured_shapes, _material_objects, _animal_actions,
    _scene_states, _scene_views, _photos_taken_in, _counted_shapes, _patterns, _colours, _shaped_objects,
    _objects_in_condition,
)


def _hash_order(phrases: Iterator[str]) -> list[str]:
    return sorted(set(phrases), key=lambda text: hashlib.sha256(text.encode()).hexdigest())


def all_descriptions() -> list[str]:
    """Every description the patterns can make, interleaved round-robin across patterns, without duplicates."""
    seen: set[str] = set()
    ordered = []
    for round_ in itertools.zip_longest(*(_hash_order(pattern()) for pattern in PATTERNS_IN_ORDER)):
        for text in round_:
            if text is not None and text not in seen:
                seen.add(text)
                ordered.append(text)
    return ordered
