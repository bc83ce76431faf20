"""FHIR search: index extraction on write, query parsing, SQL, paging, includes, bundles."""
