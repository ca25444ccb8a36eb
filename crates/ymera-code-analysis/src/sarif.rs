//! SARIF 2.1.0 output through serde-sarif.

use std::collections::BTreeMap;

use serde_sarif::sarif::{
    ArtifactLocation, Location, Message, MultiformatMessageString, PhysicalLocation, PropertyBag,
    Region, ReportingConfiguration, ReportingDescriptor, Result as SarifResult, ResultLevel, Run,
    Sarif, Tool, ToolComponent,
};

use crate::report::{Report, Severity};
use crate::rules::{RuleInfo, rules};

const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

fn level(severity: Severity) -> ResultLevel {
    match severity {
        Severity::Critical | Severity::High => ResultLevel::Error,
        Severity::Medium => ResultLevel::Warning,
        Severity::Low => ResultLevel::Note,
    }
}

fn descriptor(rule: &RuleInfo) -> ReportingDescriptor {
    let mut tags = vec![rule.category.name().to_owned()];
    if rule.category.name() == "security" {
        tags.push("security".to_owned());
        tags.dedup();
    }
    if let Some(cwe) = rule.cwe {
        tags.push(format!("external/cwe/{}", cwe.to_ascii_lowercase()));
    }
    let mut extra = BTreeMap::new();
    extra.insert(
        "languages".to_owned(),
        serde_json::json!(rule.languages.iter().map(|l| l.name()).collect::<Vec<_>>()),
    );
    extra.insert(
        "severity".to_owned(),
        serde_json::json!(rule.severity.name()),
    );
    ReportingDescriptor::builder()
        .id(rule.id)
        .name(rule.name)
        .short_description(
            MultiformatMessageString::builder()
                .text(rule.description)
                .build(),
        )
        .help(
            MultiformatMessageString::builder()
                .text(rule.suggestion)
                .build(),
        )
        .default_configuration(
            ReportingConfiguration::builder()
                .level(serde_json::json!(level(rule.severity)))
                .build(),
        )
        .properties(
            PropertyBag::builder()
                .tags(tags)
                .additional_properties(extra)
                .build(),
        )
        .build()
}

pub(crate) fn render(report: &Report) -> serde_json::Value {
    serde_json::to_value(log(report)).unwrap_or(serde_json::Value::Null)
}

/// The SARIF 2.1.0 log of `report`.
pub(crate) fn log(report: &Report) -> Sarif {
    let catalogue = rules();
    let descriptors: Vec<ReportingDescriptor> = catalogue.iter().map(descriptor).collect();
    let mut results = Vec::new();
    for file in &report.files {
        for finding in &file.findings {
            let region = Region::builder()
                .start_line(i64::try_from(finding.line).unwrap_or(i64::MAX))
                .start_column(i64::try_from(finding.column).unwrap_or(i64::MAX))
                .end_line(i64::try_from(finding.end_line.max(finding.line)).unwrap_or(i64::MAX))
                .build();
            let location = Location::builder()
                .physical_location(
                    PhysicalLocation::builder()
                        .artifact_location(
                            ArtifactLocation::builder().uri(file.path.clone()).build(),
                        )
                        .region(region)
                        .build(),
                )
                .build();
            let mut extra = BTreeMap::new();
            extra.insert("category".to_owned(), serde_json::json!(finding.category));
            extra.insert("severity".to_owned(), serde_json::json!(finding.severity));
            extra.insert(
                "confidence".to_owned(),
                serde_json::json!(finding.confidence),
            );
            if let Some(cwe) = &finding.cwe {
                extra.insert("cwe".to_owned(), serde_json::json!(cwe));
            }
            let mut builder_result = SarifResult::builder()
                .rule_id(finding.rule_id.clone())
                .level(level(finding.severity))
                .message(
                    Message::builder()
                        .text(format!("{} {}", finding.message, finding.suggestion))
                        .build(),
                )
                .locations(vec![location])
                .properties(PropertyBag::builder().additional_properties(extra).build())
                .build();
            if let Some(index) = catalogue.iter().position(|r| r.id == finding.rule_id) {
                builder_result.rule_index = Some(i64::try_from(index).unwrap_or(-1));
            }
            results.push(builder_result);
        }
    }
    let driver = ToolComponent::builder()
        .name("ymera-code-analysis")
        .version(env!("CARGO_PKG_VERSION"))
        .information_uri("https://example.invalid/ymera")
        .rules(descriptors)
        .build();
    let run = Run::builder()
        .tool(Tool::builder().driver(driver).build())
        .results(results)
        .build();
    Sarif::builder()
        .schema(SCHEMA)
        .version(serde_json::json!("2.1.0"))
        .runs(vec![run])
        .build()
}
