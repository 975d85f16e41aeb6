"""Tabular data for the training experiment: generators, CSV loading and the one shared Spark preprocessing.

- `co2_csv`: a generated CSV with the 12-column schema of the "CO2 Emission by Vehicles" data set (Canada) and
  its physical relations: fuel consumption grows with engine size and vehicle class, highway < city, combined
  = 55 % city + 45 % highway, mpg = 282.48 / combined, and CO2 = combined x the fuel's emission factor
  (about 23.3 g per L/100 km for petrol, 26.9 diesel, 16.3 E85), plus rounding and noise.
- `classes_csv`: a generated multi-class table (Gaussian classes in numeric features plus a categorical one).
- `prepare_tabular`: the preprocessing every framework shares, done once in Spark: identifier-like string
  columns dropped, categoricals indexed + one-hot encoded, everything assembled and standardised (scaler fitted
  on the training rows only), a regression label standardised with the training mean/std (R^2 is unchanged),
  class labels indexed alphabetically; a seeded, content-hashed train/test split (the same rows whatever the
  partitioning) and a seeded row order for training. Output columns: `features` (array<float>) and `label`
  (float for regression, int for classes).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CO2_COLUMNS = [
    "Make", "Model", "Vehicle Class", "Engine Size(L)", "Cylinders", "Transmission", "Fuel Type",
    "Fuel Consumption City (L/100 km)", "Fuel Consumption Hwy (L/100 km)", "Fuel Consumption Comb (L/100 km)",
    "Fuel Consumption Comb (mpg)", "CO2",
]
GENERATOR_VERSION = 2  # in cached file names: a changed generator never reuses an old file
MAX_LEVELS = 200  # string columns with more distinct values than this are identifiers, not categories
CLASS_COLUMNS = ("class_type", "class", "label", "target", "species", "y")  # looked for in this order

_MAKES = ["ACURA", "AUDI", "BMW", "BUICK", "CHEVROLET", "CHRYSLER", "DODGE", "FORD", "GMC", "HONDA", "HYUNDAI",
          "JEEP", "KIA", "LEXUS", "MAZDA", "MERCEDES-BENZ", "MINI", "NISSAN", "PORSCHE", "RAM", "SUBARU",
          "TOYOTA", "VOLKSWAGEN", "VOLVO"]
# class -> (share, extra L/100 km over a compact car, typical engine size)
_CLASSES = {
    "COMPACT": (0.14, 0.0, 2.0), "SUV - SMALL": (0.16, 0.9, 2.4), "MID-SIZE": (0.16, 0.4, 2.6),
    "SUV - STANDARD": (0.10, 1.8, 3.8), "FULL-SIZE": (0.05, 0.8, 3.6), "SUBCOMPACT": (0.08, 0.2, 2.0),
    "PICKUP TRUCK - STANDARD": (0.07, 2.4, 4.6), "TWO-SEATER": (0.06, 0.6, 3.2), "MINICOMPACT": (0.04, 0.3, 2.2),
    "STATION WAGON - SMALL": (0.03, 0.3, 2.0), "PICKUP TRUCK - SMALL": (0.02, 1.6, 3.2),
    "MINIVAN": (0.02, 1.2, 3.5), "SPECIAL PURPOSE VEHICLE": (0.01, 1.4, 2.8), "VAN - PASSENGER": (0.01, 3.5, 5.0),
    "VAN - CARGO": (0.01, 3.2, 4.8), "STATION WAGON - MID-SIZE": (0.04, 0.6, 2.8),
}
# fuel -> (share, g CO2 per (L/100 km), volume factor of consumption)
_FUELS = {"X": (0.49, 23.32, 1.0), "Z": (0.43, 23.29, 1.03), "E": (0.05, 16.32, 1.33), "D": (0.025, 26.89, 0.85),
          "N": (0.005, 16.77, 1.25)}
_GEARBOXES = ["AS6", "AS8", "M6", "A6", "A8", "AM7", "A9", "AS7", "AV", "M5", "AS10", "AM6", "A10", "AV7", "A5"]


def co2_frame(rows: int, seed: int):
    """A pandas DataFrame with the CO2 data set's columns and relations (see module docstring)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    classes = list(_CLASSES)
    shares = np.array([_CLASSES[c][0] for c in classes])
    vclass = rng.choice(classes, size=rows, p=shares / shares.sum())
    fuels = list(_FUELS)
    fshares = np.array([_FUELS[f][0] for f in fuels])
    fuel = rng.choice(fuels, size=rows, p=fshares / fshares.sum())
    typical = np.array([_CLASSES[c][2] for c in vclass])
    engine = np.clip(np.round(typical * rng.lognormal(0, 0.25, rows), 1), 0.9, 8.4)
    cyl = np.select([engine < 1.6, engine < 2.7, engine < 4.0, engine < 6.0, engine < 7.0],
                    [3, 4, 6, 8, 10], 12)
    gearbox = rng.choice(_GEARBOXES, size=rows)
    manual = np.char.startswith(gearbox.astype(str), "M")
    offset = np.array([_CLASSES[c][1] for c in vclass])
    volume = np.array([_FUELS[f][2] for f in fuel])
    factor = np.array([_FUELS[f][1] for f in fuel])
    city = (4.2 + 2.1 * engine + offset - 0.3 * manual + rng.normal(0, 0.7, rows)) * volume
    city = np.round(np.clip(city, 4.0, 30.0), 1)
    hwy = np.round(np.clip(0.66 * city + 0.4 + rng.normal(0, 0.35, rows), 3.9, 21.0), 1)
    comb = np.round(0.55 * city + 0.45 * hwy, 1)
    mpg = np.round(282.48 / comb).astype(int)
    co2 = np.round(comb * factor * rng.normal(1.0, 0.01, rows)).astype(int)
    make = rng.choice(_MAKES, size=rows)
    # about one model name per 3.6 rows, as in the real file (2,049 names in 7,385 rows)
    model = np.char.add(np.char.add(make.astype(str), " M"), rng.integers(1, max(2, rows * 10 // 36), rows).astype(str))
    return pd.DataFrame(dict(zip(CO2_COLUMNS, [make, model, vclass, engine, cyl, gearbox, fuel, city, hwy,
                                                comb, mpg, co2])))


def classes_frame(rows: int, seed: int, n_features: int = 16, n_classes: int = 5):
    """A pandas DataFrame of Gaussian classes: numeric f0.., a categorical `region`, and `class`.

    Class means differ along a few directions only and the spread overlaps, so a softmax regression gets
    most rows right and an MLP a few more (the classes are not perfectly linearly separable).
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, rows)
    centers = rng.normal(0, 1.0, (n_classes, n_features))
    x = centers[y] + rng.normal(0, 1.0, (rows, n_features))
    # a non-linear cue: the sign of a product of two features tilts one class pair
    x[:, 0] += 0.8 * np.sign(x[:, 1] * x[:, 2]) * (y % 2)
    regions = np.array(["north", "south", "east", "west"])
    region = regions[(y + rng.integers(0, 2, rows)) % 4]
    df = pd.DataFrame({f"f{i}": np.round(x[:, i], 4) for i in range(n_features)})
    df["region"] = region
    df["class"] = np.array([f"c{k}" for k in range(n_classes)])[y]
    return df


def _cached_csv(ctx, name: str, frame_fn, **params) -> Path:
    key = "-".join(f"{k}{v}" for k, v in sorted(params.items())) + f"-v{GENERATOR_VERSION}"
    path = Path(ctx.cache_dir) / "tabular" / f"{name}-{key}.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        frame_fn(**params).to_csv(tmp, index=False)
        tmp.replace(path)  # a half-written file never looks like a cached one
    return path


def co2_csv(ctx, rows: int) -> Path:
    """The generated CO2 CSV for `rows` rows and ctx.seed (cached in ctx.cache_dir by its parameters)."""
    return _cached_csv(ctx, "co2", co2_frame, rows=rows, seed=ctx.seed)


def classes_csv(ctx, rows: int, n_features: int = 16, n_classes: int = 5) -> Path:
    """The generated classification CSV (cached in ctx.cache_dir by its parameters)."""
    return _cached_csv(ctx, "classes", classes_frame, rows=rows, seed=ctx.seed, n_features=n_features,
                       n_classes=n_classes)


def csv_columns(path: Path) -> list[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        return [c.strip() for c in f.readline().strip().split(",")]


def co2_label(columns: list[str]) -> str | None:
    """The CO2 column of the vehicle data set (`CO2`, `CO2 Emissions(g/km)`, ...), or None."""
    return next((c for c in columns if c.upper().startswith("CO2")), None)


def class_label(columns: list[str]) -> str | None:
    lower = {c.lower(): c for c in columns}
    return next((lower[n] for n in CLASS_COLUMNS if n in lower), None)


def safe_name(name: str) -> str:
    """Spark ML stages and Parquet dislike spaces and brackets in column names."""
    return re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_") or "col"


@dataclass
class Prepared:
    """A preprocessed data set shared by every framework (Spark DataFrames and facts about them)."""

    train: Any  # Spark DataFrame: features array<float>, label
    test: Any
    kind: str  # "regression" | "classification"
    input_shape: tuple
    n_outputs: int  # 1 for regression, number of classes otherwise
    rows_train: int
    rows_test: int
    source: str
    info: dict[str, Any] = field(default_factory=dict)  # dropped columns, categoricals, label scaling


def seeded_split(df, seed: int, test_fraction: float):
    """(train, test) by a seeded hash of each row's content: the same rows whatever the partitioning."""
    from pyspark.sql import functions as F

    bucket = F.abs(F.xxhash64(*[F.col(c) for c in df.columns], F.lit(seed))) % 10_000
    with_b = df.withColumn("_bucket", bucket)
    cut = int(test_fraction * 10_000)
    return (with_b.where(F.col("_bucket") >= cut).drop("_bucket"),
            with_b.where(F.col("_bucket") < cut).drop("_bucket"))


def seeded_order(df, seed: int, columns: list[str] | None = None):
    """Rows in a seeded pseudo-random order (SGD wants shuffled rows; every feeder and run sees this order)."""
    from pyspark.sql import functions as F

    key = F.xxhash64(*[F.col(c) for c in (columns or df.columns)], F.lit(seed + 1))
    return df.withColumn("_order", key).orderBy("_order").drop("_order")


def prepare_tabular(spark, path: Path, task: str, seed: int, test_fraction: float = 0.2) -> Prepared:
    """Reads a CSV and preprocesses it for `task` ("co2" regression or "tabular_cls" classification)."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import OneHotEncoder, StandardScaler, StringIndexer, VectorAssembler
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    raw = spark.read.option("header", True).option("inferSchema", True).csv(str(path))
    columns = raw.columns
    label = co2_label(columns) if task == "co2" else class_label(columns)
    if label is None:
        need = ("a CO2 column (the 'CO2 Emission by Vehicles' schema, e.g. 'CO2' or 'CO2 Emissions(g/km)')"
                if task == "co2" else f"a class column named one of {', '.join(CLASS_COLUMNS)}")
        raise ValueError(f"{path}: task {task!r} needs {need}; the file has {columns}")
    df = raw.toDF(*[safe_name(c) for c in columns])
    label_col = safe_name(label)
    # cached: the counts, the pipeline's fits and the writes all scan it, so the CSV is parsed once
    df = df.withColumnRenamed(label_col, "_label").dropna().cache()
    n = df.count()
    if n < 20:
        raise ValueError(f"{path}: only {n} complete rows; training needs at least 20")
    if task == "co2" and not isinstance(df.schema["_label"].dataType, T.NumericType):
        # one non-number makes Spark read the whole column as text; say which column and which value
        bad = df.where(F.col("_label").cast("double").isNull()).select("_label").first()
        if bad is not None:
            raise ValueError(f"{path}: the label column {label!r} holds values that are not numbers (e.g. "
                             f"{bad[0]!r}); task 'co2' regresses on a number: fix or remove those rows")
        df = df.withColumn("_label", F.col("_label").cast("double"))
    strings = [f.name for f in df.schema.fields if isinstance(f.dataType, T.StringType) and f.name != "_label"]
    numerics = [f.name for f in df.schema.fields if isinstance(f.dataType, T.NumericType) and f.name != "_label"]
    distinct = df.agg(*[F.countDistinct(c).alias(c) for c in strings]).first() if strings else {}
    # identifiers (a model name, an animal's name) would one-hot into a column per row or so: noise, not signal,
    # and a feature vector too wide to feed (at most MAX_LEVELS one-hot columns per categorical)
    dropped = [c for c in strings if distinct[c] > min(MAX_LEVELS, max(60, n // 10))]
    categoricals = [c for c in strings if c not in dropped]
    if not categoricals and not numerics:
        raise ValueError(f"{path}: no usable feature columns besides the label {label!r}")
    train, test = seeded_split(df, seed, test_fraction)

    stages: list = []
    if categoricals:
        stages.append(StringIndexer(inputCols=categoricals, outputCols=[f"{c}__idx" for c in categoricals],
                                    handleInvalid="keep", stringOrderType="alphabetAsc"))
        stages.append(OneHotEncoder(inputCols=[f"{c}__idx" for c in categoricals],
                                    outputCols=[f"{c}__oh" for c in categoricals], handleInvalid="keep",
                                    dropLast=True))
    stages.append(VectorAssembler(inputCols=numerics + [f"{c}__oh" for c in categoricals], outputCol="_raw",
                                  handleInvalid="error"))
    stages.append(StandardScaler(inputCol="_raw", outputCol="_scaled", withMean=True, withStd=True))
    info: dict[str, Any] = {"dropped_columns": dropped, "categorical_columns": categoricals,
                            "numeric_columns": numerics, "label_column": label}
    if task == "co2":
        kind = "regression"
        stats = train.agg(F.mean("_label").alias("m"), F.stddev("_label").alias("s")).first()
        mean, std = float(stats["m"]), float(stats["s"]) or 1.0
        info.update(label_mean=mean, label_std=std)
        label_expr = ((F.col("_label") - F.lit(mean)) / F.lit(std)).cast("float")
    else:
        kind = "classification"
        stages.append(StringIndexer(inputCol="_label", outputCol="_label_idx", stringOrderType="alphabetAsc",
                                    handleInvalid="skip"))
        label_expr = F.col("_label_idx").cast("int")
    fitted = Pipeline(stages=stages).fit(train)
    if kind == "classification":
        info["classes"] = [str(c) for c in fitted.stages[-1].labels]

    def finish(part):
        out = fitted.transform(part)
        return out.select(vector_to_array("_scaled", "float32").alias("features"), label_expr.alias("label"))

    # the vector's length: numerics + one column per category kept by the one-hot encoders
    n_features = len(numerics) + (sum(int(s) for s in fitted.stages[1].categorySizes) if categoricals else 0)
    n_outputs = 1 if kind == "regression" else len(info["classes"])
    return Prepared(train=finish(seeded_order(train, seed)), test=finish(test), kind=kind,
                    input_shape=(n_features,), n_outputs=n_outputs, rows_train=0, rows_test=0, source=str(path),
                    info=info)
