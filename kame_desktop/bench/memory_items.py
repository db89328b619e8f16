"""What `bench lite --memory-items N` stores before its memory arm: facts a user might have told
the companion, each as the keeper writes them (one sentence about the user)."""

from __future__ import annotations

FACTS = (
    ("name", "The user's name is Daniel."),
    ("home", "The user lives in Lyon."),
    ("job", "The user works as a nurse at the city hospital."),
    ("sister", "The user's sister is called Maria."),
    ("sister's birthday", "The user's sister's birthday is on May third."),
    ("dog", "The user's dog is called Biscuit."),
    ("favorite color", "The user's favorite color is green."),
    ("favorite food", "The user's favorite food is sushi."),
    ("allergy", "The user is allergic to peanuts."),
    ("instrument", "The user plays the guitar."),
    ("car", "The user's car is parked on level four."),
    ("birthplace", "The user was born in Canada."),
    ("sport", "The user plays tennis on Sundays."),
    ("languages", "The user speaks French and English."),
    ("coffee", "The user drinks coffee without sugar."),
    ("children", "The user has two children, Tom and Lea."),
    ("book", "The user is reading a book about the history of Rome."),
    ("holiday", "The user is going to Portugal in August."),
    ("wake up", "The user wakes up at six in the morning."),
    ("music", "The user likes jazz and old soul records."),
    ("garden", "The user grows tomatoes on the balcony."),
    ("gym", "The user goes to the gym on Tuesdays and Thursdays."),
)


def seed(count: int) -> int:
    """Store the first `count` facts in the memory of the current data folder; how many."""
    from kame_desktop.backend.memory import MemoryStore

    store = MemoryStore()
    for topic, text in FACTS[:count]:
        store.remember(topic, text, how="typed")
    return min(count, len(FACTS))
