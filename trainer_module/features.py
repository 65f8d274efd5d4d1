"""What the data is: feature groups, how each is encoded, and how the label is made.

This module and `schema/schema.pbtxt` beside it are the only places that know the dataset; to train on
another tabular CSV, edit these two and nothing else.
"""
from pathlib import Path
from typing import Mapping, Optional

from trainer_module import records

# The curated schema (presence, domains, value ranges) every split is validated against.
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / records.SCHEMA_FILE

# Label: the rider tipped more than 20% of the fare. `tips` is only read to make the label and is
# never a model input (it is absent in the SERVING environment of the schema).
LABEL_KEY = "big_tipper"
LABEL_SOURCE_KEYS = ("tips", "fare")
BIG_TIP_FRACTION = 0.2
# Raw features only read to make the label: a client never sends them.
LABEL_ONLY_KEYS = ("tips",)

# Continuous values: log1p (heavy right tails: a few 1,000-mile "trips") then z-score.
LOG_NUMERIC_FEATURES = ("fare", "trip_miles", "trip_seconds")
# Continuous values that are well behaved: z-score only.
NUMERIC_FEATURES = ()
# Continuous values whose fine structure matters (tips round the total: $2 on a $9.75 fare is a big
# tip, on $10.25 it is not): also given as fine quantile buckets, each with its own embedding.
FINE_BUCKET_FEATURES = ("fare", "trip_miles", "trip_seconds")
NUM_FINE_BUCKETS = 40
BUCKET_SUFFIX = "_bucket"

# Strings: a vocabulary with out-of-vocabulary buckets for values never seen in training.
STRING_FEATURES = ("payment_type", "company")
# Integer codes that are categories, not quantities (hour 23 is not "more" than hour 1).
INTEGER_CATEGORICAL_FEATURES = (
    "trip_start_hour",
    "trip_start_day",
    "trip_start_month",
    "pickup_community_area",
    "dropoff_community_area",
)
# Not used as inputs (they made the model memorise the training split): pickup/dropoff census tracts
# (hundreds of sparse values, mostly missing) and trip_start_timestamp.
CATEGORICAL_FEATURES = STRING_FEATURES + INTEGER_CATEGORICAL_FEATURES
VOCAB_TOP_K = 1000
OOV_BUCKETS = 2
MISSING_TOKEN = "<missing>"

# Coordinates: quantile buckets, so that neighbourhoods rather than decimals are learned.
BUCKET_FEATURES = ("pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude")
NUM_BUCKETS = 10

def transformed_name(name: str) -> str:
    """Transformed features get a suffix, so evaluation can slice on raw features without ambiguity."""
    return name + "_xf"


# Numbers missing in a row are imputed and flagged by a `<name>_missing` 0/1 input.
MISSING_SUFFIX = "_missing"


def categorical_cardinality(vocabulary_size: int) -> int:
    """Embedding input size of a categorical feature: its vocabulary plus the OOV buckets."""
    return vocabulary_size + OOV_BUCKETS


def bucket_cardinality() -> int:
    """Input size of a bucketized coordinate: the quantile buckets plus one for "missing"."""
    return NUM_BUCKETS + 1


def label_from_row(row: Mapping[str, object]) -> Optional[int]:
    """The label from one raw CSV row (strings or numbers); None when the row cannot have one.

    Pure Python, for clients such as `taxi-pipeline predict` that print the truth beside a prediction.
    It must agree with `preprocessing.make_label`.
    """
    try:
        tips = float(row["tips"])
        fare = float(row["fare"])
    except (KeyError, TypeError, ValueError):
        return None
    return int(tips > BIG_TIP_FRACTION * fare)


def serving_feature_spec(raw_feature_spec: Mapping) -> dict:
    """The raw features a client sends (TF-Transform's raw feature spec without LABEL_ONLY_KEYS), by name."""
    return {name: spec for name, spec in sorted(raw_feature_spec.items()) if name not in LABEL_ONLY_KEYS}
