"""IFEval-like rows: a short request about a topic plus `difficulty` verifiable instructions.

The response is built from a handful of plain sentences about the topic and then formatted to satisfy every
instruction; the constraint checker itself is the final gate, so a row whose constraints could not all be met is
thrown away rather than emitted. Sentences contain no commas, so "no commas" never has to mangle them.
"""

from __future__ import annotations

import json
import random

from sftmix.data.example import Example, chat
from sftmix.evaluate import constraints as C

MAX_DIFFICULTY = 3

TOPICS: dict[str, tuple[str, ...]] = {
    "the ocean": (
        "The ocean covers most of the surface of the Earth.",
        "Its water is salty because rivers carry minerals into it.",
        "Whales and sharks and tiny plankton all live there.",
        "Tides rise and fall twice each day.",
        "The deepest parts are cold and completely dark.",
    ),
    "honey bees": (
        "Honey bees live together in large colonies.",
        "Each colony has one queen who lays the eggs.",
        "Worker bees collect nectar and pollen from flowers.",
        "They turn nectar into honey and store it in wax cells.",
        "Bees help many plants make fruit and seeds.",
    ),
    "the moon": (
        "The moon travels around the Earth about once a month.",
        "It shines because it reflects light from the sun.",
        "Its surface is covered with dust and craters.",
        "The pull of the moon causes ocean tides.",
        "People first walked on the moon in 1969.",
    ),
    "volcanoes": (
        "A volcano is an opening in the crust of the Earth.",
        "Hot melted rock called magma rises from deep below.",
        "When magma reaches the surface it is called lava.",
        "Some volcanoes erupt often while others sleep for centuries.",
        "Volcanic ash can make the soil very rich.",
    ),
    "bicycles": (
        "A bicycle has two wheels and is moved by pedals.",
        "Riding a bicycle is good exercise for the heart.",
        "Bicycles do not burn fuel or pollute the air.",
        "A chain carries power from the pedals to the back wheel.",
        "Riders should wear a helmet to stay safe.",
    ),
    "rainbows": (
        "A rainbow appears when sunlight shines through raindrops.",
        "Each drop bends the light and splits it into colors.",
        "The colors always come in the same order.",
        "Red is on the outside and violet is on the inside.",
        "You can only see a rainbow with the sun behind you.",
    ),
    "penguins": (
        "Penguins are birds that cannot fly.",
        "They use their wings as flippers to swim fast.",
        "Most penguins live in the cold south of the world.",
        "Thick feathers and fat keep them warm.",
        "They eat fish and squid and small shrimp.",
    ),
    "coffee": (
        "Coffee is made from the roasted seeds of a plant.",
        "The seeds are often called coffee beans.",
        "Many people drink coffee in the morning to feel awake.",
        "It contains caffeine which can make the heart beat faster.",
        "Brazil grows more coffee than any other country.",
    ),
    "the internet": (
        "The internet is a huge network of connected computers.",
        "It lets people send messages and share files in seconds.",
        "Websites are stored on computers called servers.",
        "Data travels through cables and through the air.",
        "Billions of people use the internet every day.",
    ),
    "trees": (
        "Trees are tall plants with a woody trunk.",
        "Their leaves turn sunlight into food for the tree.",
        "Trees give off oxygen that people and animals breathe.",
        "The rings inside a trunk show the age of a tree.",
        "Some trees live for thousands of years.",
    ),
    "chess": (
        "Chess is a board game for two players.",
        "Each player starts with sixteen pieces.",
        "The goal is to trap the king of the other player.",
        "The queen is the strongest piece on the board.",
        "Good players plan many moves ahead.",
    ),
    "sleep": (
        "Sleep gives the body and the brain time to rest.",
        "Most adults need about eight hours each night.",
        "Dreams happen mostly during a stage called REM sleep.",
        "Too little sleep makes it hard to focus.",
        "A dark and quiet room helps people sleep well.",
    ),
    "the desert": (
        "A desert is a place that gets very little rain.",
        "Days can be very hot and nights can be cold.",
        "Cactus plants store water inside their thick stems.",
        "Camels can walk for days without drinking.",
        "Some deserts are covered with sand dunes.",
    ),
    "bread": (
        "Bread is made from flour and water and yeast.",
        "Yeast makes the dough rise by producing gas.",
        "The dough is baked in a hot oven.",
        "People have baked bread for thousands of years.",
        "There are many kinds of bread around the world.",
    ),
    "elephants": (
        "Elephants are the largest animals that live on land.",
        "They use their long trunks to drink and to grab food.",
        "Elephants live in family groups led by an old female.",
        "They have very good memories.",
        "Their big ears help them stay cool.",
    ),
    "the sun": (
        "The sun is a star at the center of our solar system.",
        "It is a huge ball of very hot gas.",
        "Light from the sun takes about eight minutes to reach Earth.",
        "Plants need sunlight to grow.",
        "Looking straight at the sun can hurt your eyes.",
    ),
    "recycling": (
        "Recycling turns old things into new products.",
        "Paper and glass and metal can often be recycled.",
        "It saves energy and reduces waste in landfills.",
        "Items should be clean before they go in the bin.",
        "Many cities collect recycling once a week.",
    ),
    "pianos": (
        "A piano has black keys and white keys.",
        "Pressing a key makes a small hammer hit a string.",
        "Most pianos have eighty eight keys.",
        "The piano can play soft and loud sounds.",
        "Many famous composers wrote music for the piano.",
    ),
    "clouds": (
        "Clouds are made of tiny drops of water or ice.",
        "They form when warm air rises and cools.",
        "Dark clouds often bring rain or snow.",
        "Some clouds look like cotton and others look like thin streaks.",
        "Fog is a cloud that touches the ground.",
    ),
    "football": (
        "Football is played by two teams of eleven players.",
        "Players try to kick the ball into the goal.",
        "Only the goalkeeper may touch the ball with the hands.",
        "A normal match lasts ninety minutes.",
        "It is the most popular sport in the world.",
    ),
    "libraries": (
        "A library is a place where people can borrow books.",
        "Many libraries also lend movies and music.",
        "Librarians help visitors find what they need.",
        "Libraries are usually quiet so people can read.",
        "Most public libraries are free to join.",
    ),
    "tea": (
        "Tea is made by soaking dried leaves in hot water.",
        "Green tea and black tea come from the same plant.",
        "China and India grow a lot of tea.",
        "Some people add milk or lemon to their tea.",
        "Herbal drinks are often called tea as well.",
    ),
    "the brain": (
        "The brain controls everything the body does.",
        "It is made of billions of nerve cells.",
        "The brain uses a lot of the energy we eat.",
        "Different parts handle sight and speech and movement.",
        "Learning new skills builds new connections in the brain.",
    ),
    "trains": (
        "Trains run on metal rails.",
        "They can carry many people or heavy goods at once.",
        "Early trains were pulled by steam engines.",
        "Many modern trains run on electricity.",
        "Fast trains can travel at more than three hundred kilometers an hour.",
    ),
    "snow": (
        "Snow forms when water vapor freezes high in the clouds.",
        "Every snowflake has six sides.",
        "Fresh snow can make the world very quiet.",
        "Children love to build snowmen after a storm.",
        "Snow melts into water when the air gets warm.",
    ),
    "dogs": (
        "Dogs have lived with people for thousands of years.",
        "They have a very strong sense of smell.",
        "Some dogs help police or guide blind people.",
        "Dogs need daily walks and play.",
        "There are hundreds of different dog breeds.",
    ),
    "the heart": (
        "The heart is a muscle that pumps blood.",
        "It beats about seventy times each minute at rest.",
        "Blood carries oxygen from the lungs to the body.",
        "The heart has four rooms called chambers.",
        "Exercise helps keep the heart strong.",
    ),
    "maps": (
        "A map is a drawing of a place seen from above.",
        "Maps help people find their way.",
        "A scale shows how distances on the map compare to real ones.",
        "Symbols on a map stand for roads and rivers and towns.",
        "Many people now use maps on their phones.",
    ),
    "rice": (
        "Rice is the seed of a grass plant.",
        "It is a main food for more than half of the world.",
        "Rice often grows in flooded fields called paddies.",
        "There are long grain and short grain kinds of rice.",
        "Rice is cooked by boiling or steaming it.",
    ),
    "butterflies": (
        "Butterflies are insects with large colorful wings.",
        "They start life as a caterpillar.",
        "The caterpillar forms a shell called a chrysalis.",
        "Inside the chrysalis it changes into a butterfly.",
        "Butterflies drink nectar from flowers.",
    ),
    "mountains": (
        "Mountains are high landforms with steep sides.",
        "Many mountains form when parts of the crust push together.",
        "The air is thin and cold near the top.",
        "Mount Everest is the tallest mountain above sea level.",
        "Snow can stay on high peaks all year.",
    ),
    "email": (
        "Email is a way to send written messages over the internet.",
        "Each user has an address with an at sign.",
        "Messages can include pictures and other files.",
        "A short subject line tells what the message is about.",
        "People should not open attachments from strangers.",
    ),
    "gardening": (
        "Gardening means growing plants for food or beauty.",
        "Plants need sunlight and water and good soil.",
        "Seeds are planted in spring in many places.",
        "Weeds should be pulled so the plants can grow.",
        "Gardening is a calm way to spend time outside.",
    ),
    "the wheel": (
        "The wheel is one of the oldest human inventions.",
        "It was first used for making pots.",
        "Later people put wheels on carts.",
        "Wheels make it easier to move heavy loads.",
        "Cars and bikes and trains all depend on wheels.",
    ),
    "owls": (
        "Owls are birds that hunt mostly at night.",
        "They have large eyes that see well in the dark.",
        "An owl can turn its head very far around.",
        "Soft feathers let owls fly almost without sound.",
        "They eat mice and insects and small birds.",
    ),
    "soap": (
        "Soap helps remove dirt and germs from the skin.",
        "It grabs oil and lets water wash it away.",
        "Washing hands for twenty seconds stops many illnesses.",
        "Soap is made from fats and a strong base.",
        "It comes as bars or liquids or powders.",
    ),
    "lighthouses": (
        "A lighthouse is a tower with a bright light at the top.",
        "It warns ships about rocks near the coast.",
        "Each lighthouse flashes in its own pattern.",
        "Keepers once lived inside to tend the lamp.",
        "Most lighthouses today work automatically.",
    ),
    "chocolate": (
        "Chocolate is made from the beans of the cacao tree.",
        "The beans are dried and roasted and ground.",
        "Dark chocolate has more cacao and less sugar.",
        "Milk chocolate is sweeter and softer.",
        "Chocolate melts easily on a warm day.",
    ),
    "kites": (
        "A kite is a light frame covered with paper or cloth.",
        "The wind lifts the kite into the sky.",
        "A long string keeps the kite from flying away.",
        "Kites were first flown in China long ago.",
        "An open field is the best place to fly a kite.",
    ),
    "the post office": (
        "The post office delivers letters and parcels.",
        "A stamp shows that the postage has been paid.",
        "Each address has a postal code to help sorting.",
        "Mail carriers bring letters to homes every day.",
        "People can also send packages to other countries.",
    ),
}

REQUESTS = (
    "Write a short paragraph about {t}.",
    "Tell me a few facts about {t}.",
    "Explain {t} in simple words.",
    "Describe {t} for a young reader.",
    "What should I know about {t}?",
    "Give me a brief overview of {t}.",
)
START_PHRASES = ("Sure.", "Here is a short answer.", "Great question!", "Let me explain.", "Of course.")
END_PHRASES = (
    "Is there anything else I can help with?", "Hope this helps.", "That is all.", "Thanks for reading.",
    "Let me know if you have more questions.",
)
TITLES = ("{T}", "All About {T}", "Facts About {T}", "A Note on {T}")
MAX_WORDS = (15, 20, 25, 30, 40, 50)
MIN_WORDS = (15, 20, 25, 30, 35)

# Pairs of kinds that cannot (or, for one response layout, should not) be asked together.
_CONFLICTS = {
    frozenset(p)
    for p in [
        ("lowercase", "uppercase"), ("max_words", "min_words"), ("keywords", "forbidden"),
        ("json", "bullets"), ("json", "title"), ("json", "end_with"), ("json", "start_with"),
        ("json", "quoted"), ("json", "no_commas"),
        ("quoted", "start_with"), ("quoted", "end_with"), ("quoted", "bullets"),
    ]
}
_STOP = {"about", "after", "because", "called", "every", "their", "there", "these", "which", "while", "other",
         "people", "often", "many", "some", "most", "than", "into", "with", "from", "they", "that", "this",
         "each", "more", "very", "only", "also", "were", "have", "does", "same", "then"}


def _content_words(topic: str) -> list[str]:
    """Distinct lowercase words of a topic's sentences worth asking for (or against) by name."""
    words = []
    for sentence in TOPICS[topic]:
        for w in C.WORD_RE.findall(sentence.lower()):
            if len(w) >= 4 and w.isalpha() and w not in _STOP and w not in words:
                words.append(w)
    return words


# Kinds that an empty or rambling response fails. Every instruction starts with one of these: otherwise an untrained
# model scores well on "no commas" or "at most 40 words" by saying nothing, and SFT could not show.
POSITIVE = ("start_with", "end_with", "bullets", "json", "keywords", "title", "quoted", "min_words")


def _pick_constraints(rng: random.Random, topic: str, difficulty: int) -> list[dict]:
    chosen: list[dict] = []
    for _ in range(difficulty):
        kinds = [
            k for k in (POSITIVE if not chosen else C.KINDS)
            if all(k != c["kind"] and frozenset((k, c["kind"])) not in _CONFLICTS for c in chosen)
        ]
        kind = rng.choice(kinds)
        c: dict = {"kind": kind}
        if kind == "start_with":
            c["phrase"] = rng.choice(START_PHRASES)
        elif kind == "end_with":
            c["phrase"] = rng.choice(END_PHRASES)
        elif kind == "max_words":
            c["n"] = rng.choice(MAX_WORDS)
        elif kind == "min_words":
            c["n"] = rng.choice(MIN_WORDS)
        elif kind == "bullets":
            c["n"] = rng.randint(2, 4)
        elif kind in ("keywords", "forbidden"):
            # Forbidden words must not be in the topic's own name, or the title/JSON could never avoid them.
            pool = [w for w in _content_words(topic) if kind == "keywords" or w not in topic]
            c["words"] = rng.sample(pool, rng.randint(1, 2))
        chosen.append(c)
    return chosen


def _render(topic: str, sentences: list[str], cs: dict[str, dict], title: str) -> str:
    if "json" in cs:
        text = json.dumps({"topic": topic, "facts": sentences}, ensure_ascii=False)
    else:
        body = [f"- {s}" for s in sentences] if "bullets" in cs else [" ".join(sentences)]
        parts = ([cs["start_with"]["phrase"]] if "start_with" in cs else []) + (
            [f"<<{title}>>"] if "title" in cs else []) + body + (
            [cs["end_with"]["phrase"]] if "end_with" in cs else [])
        text = ("\n" if "bullets" in cs or "title" in cs else " ").join(parts)
    if "quoted" in cs:
        text = f'"{text}"'
    if "no_commas" in cs:
        text = text.replace(",", "")
    if "lowercase" in cs:
        text = text.lower()
    elif "uppercase" in cs:
        text = text.upper()
    return text


def _respond(rng: random.Random, topic: str, constraints: list[dict]) -> str | None:
    cs = {c["kind"]: c for c in constraints}
    banned = cs.get("forbidden", {}).get("words", [])
    wanted = cs.get("keywords", {}).get("words", [])
    pool = [s for s in TOPICS[topic] if not any(C.has_word(s, w) for w in banned)]
    must = [s for s in pool if any(C.has_word(s, w) for w in wanted)]
    rest = [s for s in pool if s not in must]
    rng.shuffle(rest)
    if "bullets" in cs:
        target = cs["bullets"]["n"]
    else:
        target = rng.randint(2, 3)
    chosen = must + rest[: max(0, target - len(must))]
    extra = rest[len(chosen) - len(must):]
    title = rng.choice(TITLES).format(T=topic.title())

    def render(ss: list[str]) -> str:
        # Keep the topic's own order so the text reads naturally.
        return _render(topic, sorted(ss, key=TOPICS[topic].index), cs, title)

    if "min_words" in cs and "bullets" not in cs:
        while extra and C.count_words(render(chosen)) < cs["min_words"]["n"]:
            chosen.append(extra.pop(0))
    if "max_words" in cs and "bullets" not in cs:
        while len(chosen) > max(1, len(must)) and C.count_words(render(chosen)) > cs["max_words"]["n"]:
            chosen.pop()
    if not chosen:
        return None
    text = render(chosen)
    return text if all(C.check_all(constraints, text)) else None


def draw(rng: random.Random, difficulty: int) -> tuple[str, Example] | None:
    topic = rng.choice(list(TOPICS))
    constraints = _pick_constraints(rng, topic, difficulty)
    response = _respond(rng, topic, constraints)
    if response is None:
        return None
    request = rng.choice(REQUESTS).format(t=topic)
    user = " ".join([request, *(C.describe(c) for c in constraints)])
    # The task is the topic plus the set of constraints, whatever the wording or order: that decides the split.
    key = topic + "|" + json.dumps(sorted(constraints, key=lambda c: json.dumps(c, sort_keys=True)), sort_keys=True)
    return key, chat(user, response, constraints=constraints, topic=topic)
