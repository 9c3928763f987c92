//! The table's definition, read from its one source: `infra/table.json`, the CloudFormation `Properties`
//! of the `AWS::DynamoDB::Table` (key schema, attribute definitions, the GSI, TTL, billing mode, PITR).
//!
//! The file is compiled in (`include_str!`), so the adapter, the tests' [`create_table`] and the SAM
//! template's check (`infra/tests/check_template.py`) all see the same bytes. The attribute names the
//! adapter writes are constants in [`crate::dynamo`]; a unit test below checks they agree with the
//! file.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    PointInTimeRecoverySpecification, Projection, ProjectionType, ScalarAttributeType,
    SseSpecification, TimeToLiveSpecification,
};
use serde::Deserialize;

use crate::error::{classify, StoreError};

/// The file itself, byte for byte.
pub const TABLE_JSON: &str = include_str!("../../../../infra/table.json");

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TableDefinition {
    pub billing_mode: String,
    pub attribute_definitions: Vec<AttributeDef>,
    pub key_schema: Vec<KeyElement>,
    #[serde(default)]
    pub global_secondary_indexes: Vec<IndexDef>,
    pub time_to_live_specification: TtlSpec,
    pub point_in_time_recovery_specification: PitrSpec,
    #[serde(rename = "SSESpecification")]
    pub sse_specification: Option<SseSpec>,
    #[serde(default)]
    pub deletion_protection_enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AttributeDef {
    pub attribute_name: String,
    pub attribute_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct KeyElement {
    pub attribute_name: String,
    pub key_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct IndexDef {
    pub index_name: String,
    pub key_schema: Vec<KeyElement>,
    pub projection: ProjectionDef,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ProjectionDef {
    pub projection_type: String,
    #[serde(default)]
    pub non_key_attributes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TtlSpec {
    pub attribute_name: String,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PitrSpec {
    pub point_in_time_recovery_enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SseSpec {
    #[serde(rename = "SSEEnabled")]
    pub sse_enabled: bool,
}

/// The parsed `infra/table.json`.
pub fn table_definition() -> Result<TableDefinition, StoreError> {
    serde_json::from_str(TABLE_JSON)
        .map_err(|e| StoreError::Permanent(format!("infra/table.json does not parse: {e}").into()))
}

fn key_schema(elements: &[KeyElement]) -> Result<Vec<KeySchemaElement>, StoreError> {
    elements
        .iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(&k.attribute_name)
                .key_type(KeyType::from(k.key_type.as_str()))
                .build()
                .map_err(build_error)
        })
        .collect()
}

fn build_error(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Permanent(format!("table definition: {e}").into())
}

/// Creates a table named `name` from `infra/table.json` and waits until it is active, with its TTL and
/// PITR settings applied. For tests and first-time local setups; in AWS the SAM template creates it.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str) -> Result<(), StoreError> {
    let def = table_definition()?;
    let mut req = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::from(def.billing_mode.as_str()))
        .set_key_schema(Some(key_schema(&def.key_schema)?))
        .deletion_protection_enabled(def.deletion_protection_enabled);
    for a in &def.attribute_definitions {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(&a.attribute_name)
                .attribute_type(ScalarAttributeType::from(a.attribute_type.as_str()))
                .build()
                .map_err(build_error)?,
        );
    }
    for g in &def.global_secondary_indexes {
        let projection = Projection::builder()
            .projection_type(ProjectionType::from(g.projection.projection_type.as_str()))
            .set_non_key_attributes(
                (!g.projection.non_key_attributes.is_empty())
                    .then(|| g.projection.non_key_attributes.clone()),
            )
            .build();
        req = req.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(&g.index_name)
                .set_key_schema(Some(key_schema(&g.key_schema)?))
                .projection(projection)
                .build()
                .map_err(build_error)?,
        );
    }
    if let Some(sse) = &def.sse_specification {
        req = req.sse_specification(SseSpecification::builder().enabled(sse.sse_enabled).build());
    }
    req.send().await.map_err(classify)?;

    // Wait for ACTIVE (moto is at once; real DynamoDB takes seconds).
    for _ in 0..120 {
        let status = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(classify)?
            .table
            .and_then(|t| t.table_status)
            .map(|s| s.as_str().to_owned());
        if status.as_deref() == Some("ACTIVE") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }

    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(&def.time_to_live_specification.attribute_name)
                .enabled(def.time_to_live_specification.enabled)
                .build()
                .map_err(build_error)?,
        )
        .send()
        .await
        .map_err(classify)?;
    client
        .update_continuous_backups()
        .table_name(name)
        .point_in_time_recovery_specification(
            PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(
                    def.point_in_time_recovery_specification
                        .point_in_time_recovery_enabled,
                )
                .build()
                .map_err(build_error)?,
        )
        .send()
        .await
        .map_err(classify)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamo::{
        ATTR_EXPIRES, ATTR_GSI1_PK, ATTR_GSI1_SK, ATTR_PK, ATTR_REFUND, ATTR_SK, GSI1,
    };

    #[test]
    fn the_file_parses_and_names_what_the_adapter_writes() {
        let def = table_definition().expect("infra/table.json parses");
        assert_eq!(def.billing_mode, "PAY_PER_REQUEST");
        let keys: Vec<_> = def
            .key_schema
            .iter()
            .map(|k| (k.attribute_name.as_str(), k.key_type.as_str()))
            .collect();
        assert_eq!(keys, [(ATTR_PK, "HASH"), (ATTR_SK, "RANGE")]);
        let gsi = def
            .global_secondary_indexes
            .iter()
            .find(|g| g.index_name == GSI1)
            .expect("the deadline/pending-refund index");
        let keys: Vec<_> = gsi
            .key_schema
            .iter()
            .map(|k| (k.attribute_name.as_str(), k.key_type.as_str()))
            .collect();
        assert_eq!(keys, [(ATTR_GSI1_PK, "HASH"), (ATTR_GSI1_SK, "RANGE")]);
        assert_eq!(gsi.projection.projection_type, "INCLUDE");
        assert_eq!(gsi.projection.non_key_attributes, [ATTR_REFUND]);
        let types: Vec<_> = def
            .attribute_definitions
            .iter()
            .map(|a| (a.attribute_name.as_str(), a.attribute_type.as_str()))
            .collect();
        assert_eq!(
            types,
            [
                (ATTR_PK, "S"),
                (ATTR_SK, "S"),
                (ATTR_GSI1_PK, "S"),
                (ATTR_GSI1_SK, "N")
            ]
        );
        assert_eq!(def.time_to_live_specification.attribute_name, ATTR_EXPIRES);
        assert!(def.time_to_live_specification.enabled);
        assert!(
            def.point_in_time_recovery_specification
                .point_in_time_recovery_enabled
        );
    }
}
