"""Secrets are masked in mappings and scrubbed from free text."""
from harness.masking import MASK, is_secret_name, mask_mapping, scrub, secret_values


def test_secret_names():
    for name in ("spark.hadoop.fs.s3a.secret.key", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_TOKEN",
                 "db.password", "GOOGLE_APPLICATION_CREDENTIALS", "spark.authenticate.secret", "API_KEY"):
        assert is_secret_name(name), name
    for name in ("spark.master", "spark.sql.shuffle.partitions", "JAVA_HOME", "spark.executor.memory"):
        assert not is_secret_name(name), name


def test_mask_mapping_hides_values_and_url_passwords():
    m = mask_mapping({"spark.hadoop.fs.s3a.access.key": "AKIAXXXX", "spark.master": "local[2]",
                      "MLFLOW_TRACKING_URI": "https://bob:hunter2@mlflow.example/", "nested": {"token": "t0k"}})
    assert m["spark.hadoop.fs.s3a.access.key"] == MASK
    assert m["spark.master"] == "local[2]"
    assert m["MLFLOW_TRACKING_URI"] == f"https://bob:{MASK}@mlflow.example/"
    assert m["nested"] == {"token": MASK}


def test_scrub_removes_known_secret_values_from_text():
    secrets = secret_values({"MY_TOKEN": "abcd1234", "HOME": "/root"})
    assert secrets == ["abcd1234"]
    assert scrub("failed with token abcd1234 at s3://u:pw@h/x", secrets) == f"failed with token {MASK} at s3://u:{MASK}@h/x"
