"""The checks of the sales analytics (docs/sales.md): the Glue table `facts` has exactly the documented fact columns
in order and `dt` as its only partition (projected, so no crawler); the Firehose delivery stream converts the
records to Parquet against that table and writes where the table reads; Firehose's role reads exactly that
table's schema and writes exactly its two prefixes; the bucket is encrypted and private; the Athena workgroup
enforces its settings and a scan cutoff; and there is one named query per report section, in the workgroup,
whose QueryString is its infra/athena/NN-<section>.sql (scripts/athena-queries writes them)."""

from __future__ import annotations

from .model import (
    ATHENA_DIR,
    SALES_MD,
    _Template,
    as_list,
    documented_fact_columns,
    getatt_of,
    ref_of,
    report_sections,
    show,
    statements_of,
    sub_of,
    trust_services,
)

PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
PARTITIONS = [{"Name": "dt", "Type": "string"}]
PROJECTION = {
    "projection.enabled": "true",
    "projection.dt.type": "date",
    "projection.dt.format": "yyyy-MM-dd",
}
DAY_PREFIX = "dt=!{timestamp:yyyy-MM-dd}/"
GLUE_READ = ["glue:GetTable", "glue:GetTableVersion", "glue:GetTableVersions"]
BUCKET_ACTIONS = ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"]
OBJECT_ACTIONS = ["s3:PutObject", "s3:AbortMultipartUpload"]
GLUE_ARN = "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:"
MIN_CUTOFF = 10 * 1024 * 1024  # Athena's minimum BytesScannedCutoffPerQuery


def _s3_location(v) -> tuple[str, str] | None:
    """!Sub "s3://${Bucket}/prefix" -> (Bucket, prefix)."""
    s = sub_of(v)
    if not s or not s.startswith("s3://${") or "}/" not in s:
        return None
    bucket, _, prefix = s[len("s3://${"):].partition("}/")
    return bucket, prefix


def check_glue_table(t: _Template) -> dict | None:
    """One Glue table `facts`: the columns of docs/sales.md in order with their types, partitioned by `dt` (string) only,
    projected by date (yyyy-MM-dd) at its storage location, Parquet; returns {logical, database, bucket, prefix}."""
    tables = t.of_type("AWS::Glue::Table")
    if len(tables) != 1:
        t.err(f"expected one AWS::Glue::Table (facts), found {sorted(tables)}")
        return None
    logical, table = next(iter(tables.items()))
    p = table["Properties"]
    ti = p.get("TableInput", {})
    sd = ti.get("StorageDescriptor", {})
    if ti.get("Name") != "facts":
        t.err(f"{logical}: TableInput.Name must be facts (the queries read it), is {show(ti.get('Name'))}")
    want = documented_fact_columns(SALES_MD.read_text())
    got = [(c.get("Name"), c.get("Type")) for c in sd.get("Columns", [])]
    if not want:
        t.err("docs/sales.md: no facts table found (## Facts, rows | `column` | type | ...)")
    elif got != want:
        t.err(f"{logical}: columns differ from docs/sales.md's facts table (name, type, order): want {want}, have {got}")
    if ti.get("PartitionKeys") != PARTITIONS:
        t.err(f"{logical}: PartitionKeys must be exactly [dt string] (the UTC delivery day), are {show(ti.get('PartitionKeys'))}")
    if sd.get("SerdeInfo", {}).get("SerializationLibrary") != PARQUET_SERDE:
        t.err(f"{logical}: SerdeInfo.SerializationLibrary must be {PARQUET_SERDE} (Firehose writes Parquet)")
    params = ti.get("Parameters", {})
    for k, v in PROJECTION.items():
        if params.get(k) != v:
            t.err(f"{logical}: partition projection needs Parameters {k} = {v!r}, has {show(params.get(k))}")
    if not params.get("projection.dt.range"):
        t.err(f"{logical}: partition projection needs Parameters projection.dt.range")
    loc = _s3_location(sd.get("Location"))
    if loc is None or not loc[1].endswith("/"):
        t.err(f"{logical}: StorageDescriptor.Location must be !Sub s3://${{<bucket>}}/<prefix>/, is {show(sd.get('Location'))}")
        return None
    bucket, prefix = loc
    if _s3_location(params.get("storage.location.template")) != (bucket, prefix + "dt=${!dt}/"):
        t.err(f"{logical}: Parameters storage.location.template must be !Sub s3://${{{bucket}}}/{prefix}dt=${{!dt}}/")
    database = ref_of(p.get("DatabaseName"))
    if database not in t.of_type("AWS::Glue::Database"):
        t.err(f"{logical}: DatabaseName must be !Ref of the template's AWS::Glue::Database")
    return {"logical": logical, "database": database, "bucket": bucket, "prefix": prefix}


def check_delivery_stream(t: _Template, glue: dict | None) -> dict | None:
    """One DirectPut delivery stream: to the Glue table's bucket under <prefix>dt=!{timestamp:yyyy-MM-dd}/ with an error
    prefix, buffering >= 64 MB, converting OpenX JSON to Parquet with the Glue table's schema; returns {logical, role, error_prefix}."""
    if len(t.firehoses) != 1:
        t.err(f"expected one AWS::KinesisFirehose::DeliveryStream, found {sorted(t.firehoses)}")
        return None
    logical, fh = next(iter(t.firehoses.items()))
    p = fh["Properties"]
    if p.get("DeliveryStreamType") != "DirectPut":
        t.err(f"{logical}: DeliveryStreamType must be DirectPut (analytics-export puts the records)")
    d = p.get("ExtendedS3DestinationConfiguration")
    if not isinstance(d, dict):
        t.err(f"{logical}: needs an ExtendedS3DestinationConfiguration")
        return None
    role = getatt_of(d.get("RoleARN"))
    role = role[0] if role and role[1] == "Arn" and role[0] in t.roles else None
    if role is None:
        t.err(f"{logical}: RoleARN must be !GetAtt of its own AWS::IAM::Role")
    conv = d.get("DataFormatConversionConfiguration", {})
    deserializer = conv.get("InputFormatConfiguration", {}).get("Deserializer", {})
    serializer = conv.get("OutputFormatConfiguration", {}).get("Serializer", {})
    if conv.get("Enabled") is not True or set(deserializer) != {"OpenXJsonSerDe"} or set(serializer) != {"ParquetSerDe"}:
        t.err(f"{logical}: must convert to Parquet (DataFormatConversionConfiguration Enabled, OpenXJsonSerDe -> ParquetSerDe)")
    hints = d.get("BufferingHints", {})
    if not isinstance(hints.get("SizeInMBs"), int) or hints["SizeInMBs"] < 64:
        t.err(f"{logical}: BufferingHints.SizeInMBs must be at least 64 (Parquet conversion)")
    error_prefix = d.get("ErrorOutputPrefix")
    if not isinstance(error_prefix, str) or "!{firehose:error-output-type}" not in error_prefix:
        t.err(f"{logical}: ErrorOutputPrefix must be set, with !{{firehose:error-output-type}} (a !{{timestamp}} prefix requires it)")
        error_prefix = None
    if glue is None:
        return {"logical": logical, "role": role, "error_prefix": error_prefix}
    schema = conv.get("SchemaConfiguration", {})
    if ref_of(schema.get("DatabaseName")) != glue["database"] or ref_of(schema.get("TableName")) != glue["logical"]:
        t.err(f"{logical}: SchemaConfiguration must name the Glue table (DatabaseName !Ref {glue['database']}, TableName !Ref {glue['logical']})")
    if getatt_of(schema.get("RoleARN")) != (role, "Arn"):
        t.err(f"{logical}: SchemaConfiguration.RoleARN must be the stream's own role {role}")
    if schema.get("VersionId", "LATEST") != "LATEST":
        t.err(f"{logical}: SchemaConfiguration.VersionId must be LATEST (a column added to the table is written)")
    if getatt_of(d.get("BucketARN")) != (glue["bucket"], "Arn"):
        t.err(f"{logical}: BucketARN must be !GetAtt {glue['bucket']}.Arn (where the Glue table reads)")
    if d.get("Prefix") != glue["prefix"] + DAY_PREFIX:
        t.err(f"{logical}: Prefix must be {glue['prefix'] + DAY_PREFIX!r} (the Glue table's partitions), is {show(d.get('Prefix'))}")
    if error_prefix and error_prefix.startswith(glue["prefix"]):
        t.err(f"{logical}: ErrorOutputPrefix must be outside the table's {glue['prefix']} (failed records are not facts)")
    return {"logical": logical, "role": role, "error_prefix": error_prefix}


def check_delivery_role(t: _Template, fh: dict | None, glue: dict | None) -> None:
    """Firehose's role: assumable by firehose.amazonaws.com only; exactly glue:GetTable* on the catalog, the database and
    the table, the bucket-level reads on the bucket, and object writes on the table's and the error prefix."""
    if not fh or not fh["role"] or not glue:
        return
    role_logical = fh["role"]
    role = t.roles[role_logical]
    if trust_services(role) != {"firehose.amazonaws.com"}:
        t.err(f"{role_logical}: must be assumable by firehose.amazonaws.com only, is {sorted(trust_services(role))}")
    stmts, problems = statements_of(role)
    for p_ in problems:
        t.err(f"{role_logical}: {p_}")
    db, table, bucket = glue["database"], glue["logical"], glue["bucket"]
    error_root = (fh["error_prefix"] or "?").split("!{", 1)[0].split("/", 1)[0] + "/"
    want = set()
    for a in GLUE_READ:
        want |= {(a, GLUE_ARN + "catalog"), (a, GLUE_ARN + f"database/${{{db}}}"), (a, GLUE_ARN + f"table/${{{db}}}/${{{table}}}")}
    want |= {(a, f"{bucket}.Arn") for a in BUCKET_ACTIONS}
    want |= {(a, f"${{{bucket}.Arn}}/{p}*") for a in OBJECT_ACTIONS for p in (glue["prefix"], error_root)}
    got = set()
    for st in stmts:
        if st.get("Effect") != "Allow" or "NotAction" in st or "NotResource" in st:
            t.err(f"{role_logical}: statement {st.get('Sid', '?')} must be a plain Allow")
            continue
        for a in as_list(st.get("Action", [])):
            for r in as_list(st.get("Resource", [])):
                ga = getatt_of(r)
                got.add((a, f"{ga[0]}.{ga[1]}" if ga else sub_of(r) or show(r)))
    if got != want:
        t.err(f"{role_logical}: must allow exactly glue:GetTable* on the facts table's catalog/database/table and S3 writes to "
              f"{glue['prefix']} and {error_root} — missing {sorted(want - got)}, extra {sorted(got - want)}")


def check_analytics_bucket(t: _Template) -> None:
    """Every S3 bucket is encrypted at rest with all public access blocked."""
    for logical, b in t.of_type("AWS::S3::Bucket").items():
        p = b.get("Properties", {})
        if not p.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration"):
            t.err(f"{logical}: BucketEncryption must be set")
        pab = p.get("PublicAccessBlockConfiguration", {})
        if not all(pab.get(k) is True for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")):
            t.err(f"{logical}: PublicAccessBlockConfiguration must block all four kinds of public access")


def check_workgroup(t: _Template) -> str | None:
    """One Athena workgroup: its configuration enforced, a bytes-scanned cutoff, results in one of the template's buckets."""
    wgs = t.of_type("AWS::Athena::WorkGroup")
    if len(wgs) != 1:
        t.err(f"expected one AWS::Athena::WorkGroup, found {sorted(wgs)}")
        return None
    logical, wg = next(iter(wgs.items()))
    c = wg["Properties"].get("WorkGroupConfiguration", {})
    if c.get("EnforceWorkGroupConfiguration") is not True:
        t.err(f"{logical}: EnforceWorkGroupConfiguration must be true (its results location and cutoff hold for every query)")
    cutoff = c.get("BytesScannedCutoffPerQuery")
    if not isinstance(cutoff, int) or cutoff < MIN_CUTOFF:
        t.err(f"{logical}: BytesScannedCutoffPerQuery must be set (at least {MIN_CUTOFF})")
    loc = _s3_location(c.get("ResultConfiguration", {}).get("OutputLocation"))
    if loc is None or loc[0] not in t.of_type("AWS::S3::Bucket"):
        t.err(f"{logical}: ResultConfiguration.OutputLocation must be !Sub s3://${{<the template's bucket>}}/<prefix>/")
    return logical


def check_named_queries(t: _Template, workgroup: str | None, glue: dict | None) -> None:
    """One NamedQuery per report section of docs/sales.md, named after and equal to its infra/athena/NN-<section>.sql,
    in the workgroup, on the Glue table's database; no other named query, no .sql file without one."""
    sections = report_sections(SALES_MD.read_text())
    if not sections:
        t.err("docs/sales.md: no report sections found (### N. `name`)")
    wanted = {f"{n:02d}-{name}" for n, name in sections}
    files = {p.stem: p for p in sorted(ATHENA_DIR.glob("*.sql"))}
    for stem in sorted(wanted - set(files)):
        t.err(f"infra/athena/{stem}.sql missing (a report section of docs/sales.md)")
    for stem in sorted(set(files) - wanted):
        t.err(f"infra/athena/{stem}.sql is no report section of docs/sales.md")
    queries = t.of_type("AWS::Athena::NamedQuery")
    by_name: dict[str, str] = {}
    for logical, q in queries.items():
        p = q["Properties"]
        name = p.get("Name")
        if name not in files:
            t.err(f"{logical}: Name {show(name)} is no infra/athena/<Name>.sql")
            continue
        if name in by_name:
            t.err(f"{logical}: {name} is also {by_name[name]}")
        by_name[name] = logical
        if workgroup is None or ref_of(p.get("WorkGroup")) != workgroup:
            t.err(f"{logical}: must be in the workgroup (WorkGroup !Ref {workgroup})")
        if glue and ref_of(p.get("Database")) != glue["database"]:
            t.err(f"{logical}: Database must be !Ref {glue['database']} (the facts table's)")
        if p.get("QueryString") != files[name].read_text():
            t.err(f"{logical}: QueryString differs from infra/athena/{name}.sql (run scripts/athena-queries)")
    for name in sorted(set(files) - set(by_name)):
        t.err(f"no AWS::Athena::NamedQuery for infra/athena/{name}.sql (run scripts/athena-queries)")
