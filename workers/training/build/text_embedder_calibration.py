"""The text embedder's zero-shot calibration: a cosine -> probability mapping fitted at build time
on a built-in labelled set (:func:`calibrate`, used by :mod:`workers.training.build.text_embedder`).
"""

from __future__ import annotations

import numpy as np

from workers.tagging.text import TextEmbedder, VocabularyTerm

# A small labelled set for the cosine -> probability mapping. It is deliberately disjoint from the
# unit tests' texts and has more labels (10) than a typical CMS vocabulary, so the fitted prior is
# conservative rather than optimistic.
CALIBRATION_VOCABULARY = [
    VocabularyTerm("sports", ["athletes, teams, matches, tournaments and results"]),
    VocabularyTerm("politics", ["governments, elections, parliaments, laws and political parties"]),
    VocabularyTerm("cooking", ["recipes, ingredients, kitchens and preparing food"]),
    VocabularyTerm("technology", ["computers, software, the internet, gadgets and engineering"]),
    VocabularyTerm("health", ["medicine, illness, doctors, fitness and wellbeing"]),
    VocabularyTerm("finance", ["money, markets, banks, investing and the economy"]),
    VocabularyTerm("travel", ["trips, tourism, destinations, flights and hotels"]),
    VocabularyTerm("music", ["songs, bands, concerts, albums and musicians"]),
    VocabularyTerm("science", ["research, experiments, physics, biology and discoveries"]),
    VocabularyTerm("education", ["schools, teachers, students, universities and learning"]),
]

CALIBRATION_TEXTS: list[tuple[str, str]] = [
    ("The striker scored twice in the second half to win the cup final.", "sports"),
    ("She broke the national record in the 400 metres at the indoor championships.", "sports"),
    ("The coach was sacked after the team lost seven games in a row.", "sports"),
    ("Rain delayed the fifth day of the test match between the two sides.", "sports"),
    ("The cyclist crossed the mountain stage alone and took the yellow jersey.", "sports"),
    ("The senate passed the budget bill after a late-night vote.", "politics"),
    ("Opposition leaders called for a snap election after the minister resigned.", "politics"),
    ("The president vetoed the immigration reform approved by congress.", "politics"),
    ("Voters in the district elected a new mayor on Sunday.", "politics"),
    ("The coalition agreement sets out the government's priorities for four years.", "politics"),
    ("Whisk the eggs with sugar, then fold in the flour and bake for twenty minutes.", "cooking"),
    ("Slow-cook the lamb shoulder with garlic and rosemary until it falls apart.", "cooking"),
    ("A good risotto needs warm stock added one ladle at a time.", "cooking"),
    ("Season the soup with salt and a squeeze of lemon just before serving.", "cooking"),
    ("Knead the dough for ten minutes and let it rise in a warm place.", "cooking"),
    ("The new phone ships with a faster chip and a brighter display.", "technology"),
    ("Developers can now deploy the database with a single command.", "technology"),
    ("The update fixes a security flaw in the browser's password manager.", "technology"),
    ("Engineers trained the neural network on a cluster of graphics cards.", "technology"),
    ("The laptop's battery lasts fourteen hours on a single charge.", "technology"),
    ("Regular exercise lowers blood pressure and the risk of heart disease.", "health"),
    ("The clinic offers free flu vaccinations to people over sixty-five.", "health"),
    ("Doctors warn that poor sleep weakens the immune system.", "health"),
    ("The patient recovered quickly after the knee surgery.", "health"),
    ("A balanced diet with plenty of vegetables supports long-term wellbeing.", "health"),
    ("Shares fell sharply after the central bank raised interest rates.", "finance"),
    ("The company reported record quarterly profits and raised its dividend.", "finance"),
    ("Inflation slowed to three percent last month.", "finance"),
    ("Investors moved money into government bonds as stock markets wobbled.", "finance"),
    ("The bank cut its mortgage rates for first-time buyers.", "finance"),
    ("We spent a week island-hopping in Greece and stayed in small guesthouses.", "travel"),
    ("The airline added direct flights from Lisbon to Montreal this summer.", "travel"),
    ("Book the night train early if you want a sleeper cabin to Vienna.", "travel"),
    ("The old town is best explored on foot, away from the tourist crowds.", "travel"),
    ("Our hotel had a view of the harbour and breakfast on the terrace.", "travel"),
    ("The band's third album mixes folk melodies with electronic beats.", "music"),
    ("The orchestra opened the concert with a Beethoven symphony.", "music"),
    ("She learned to play the guitar by ear before taking lessons.", "music"),
    ("The festival line-up includes two hundred artists on six stages.", "music"),
    ("The singer cancelled the tour after losing her voice.", "music"),
    ("Astronomers detected water vapour in the atmosphere of a distant planet.", "science"),
    ("The experiment measured how bacteria respond to changes in temperature.", "science"),
    ("Physicists confirmed the particle's mass with unprecedented precision.", "science"),
    ("A fossil found in the desert shows an early ancestor of modern birds.", "science"),
    ("Researchers published the genome of the rare orchid.", "science"),
    ("Teachers say smaller classes help pupils who fall behind in reading.", "education"),
    ("The university will offer a new degree in data science next year.", "education"),
    ("Students sat their final exams in the school gymnasium.", "education"),
    ("The ministry plans to train five thousand new primary teachers.", "education"),
    ("Homework clubs give children a quiet place to study after school.", "education"),
    # Headline-style texts full of names: real CMS content, and far from the descriptions, so
    # they keep the fitted intercept from assuming every relevant text sounds generic.
    ("Real Madrid edge Bayern in Champions League semi-final thriller", "sports"),
    ("Djokovic withdraws from Paris Masters with elbow injury", "sports"),
    ("Bundestag approves Scholz's pension package despite CDU objections", "politics"),
    ("Macron names new prime minister after Barnier government falls", "politics"),
    ("Ottolenghi's charred aubergine with tahini and pomegranate", "cooking"),
    ("Nigella's one-pan chicken traybake for busy weeknights", "cooking"),
    ("Nvidia unveils Blackwell chips as Microsoft expands Azure data centres", "technology"),
    ("Linux 6.8 lands with Rust drivers and Intel Xe support", "technology"),
    ("WHO declares mpox outbreak a global emergency", "health"),
    ("NHS waiting lists fall for third month in a row", "health"),
    ("Nasdaq slides as Tesla and Apple drag on Wall Street", "finance"),
    ("ECB holds rates at 4% as Lagarde signals June cut", "finance"),
    ("Ryanair adds Marrakech and Tenerife routes from Dublin", "travel"),
    ("Kyoto to limit tourist access to Gion's private alleys", "travel"),
    ("Taylor Swift's Eras Tour breaks Wembley attendance record", "music"),
    ("Radiohead's Thom Yorke announces solo Australian dates", "music"),
    ("JWST spots carbon dioxide on Jupiter's moon Europa", "science"),
    ("CERN's LHC restarts at record 13.6 TeV", "science"),
    ("Ofsted downgrades Birmingham academy after inspection", "education"),
    ("Oxford and Cambridge widen access for state school applicants", "education"),
]


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-3) -> tuple[float, float]:
    """``(slope, intercept)`` of ``p = sigmoid(slope * x + intercept)`` by Newton's method.

    Two parameters do not justify a scikit-learn dependency in the build; the small ridge term
    keeps the Hessian invertible when the classes separate perfectly.
    """
    features = np.stack([x, np.ones_like(x)], axis=1).astype(np.float64)
    w = np.zeros(2)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-features @ w))
        grad = features.T @ (p - y) + l2 * w
        hess = features.T @ (features * (p * (1 - p))[:, None]) + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])


def calibrate(embedder: TextEmbedder) -> tuple[dict[str, float], dict[str, float]]:
    """Fit the cosine -> probability mapping; return (calibration, metrics)."""
    texts = [t for t, _ in CALIBRATION_TEXTS]
    names = [e.name for e in CALIBRATION_VOCABULARY]
    labels = np.array([names.index(lbl) for _, lbl in CALIBRATION_TEXTS])
    sims = embedder.similarities(embedder.embed(texts), CALIBRATION_VOCABULARY)
    y = (labels[:, None] == np.arange(len(names))[None, :]).astype(np.float64)
    slope, intercept = fit_logistic(sims.ravel(), y.ravel())
    p = 1.0 / (1.0 + np.exp(-(slope * sims + intercept)))
    predicted = p >= 0.5
    tp = float((predicted & (y == 1)).sum())
    precision = tp / max(1.0, float(predicted.sum()))
    recall = tp / float(y.sum())
    eps = 1e-12
    metrics = {
        "zero_shot_top1_accuracy": float((sims.argmax(1) == labels).mean()),
        "zero_shot_log_loss": float(-(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)).mean()),
        "zero_shot_brier": float(((p - y) ** 2).mean()),
        "zero_shot_precision_at_0.5": precision,
        "zero_shot_recall_at_0.5": recall,
        "zero_shot_calibration_pairs": int(y.size),
    }
    return {"slope": slope, "intercept": intercept}, metrics
