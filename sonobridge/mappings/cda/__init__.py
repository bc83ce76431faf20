"""WS/T 500 CDA documents (China's 电子病历共享文档规范) to and from FHIR, pure (lxml).

- ``report.report_document``: WS/T 500.6 检查报告 from a final ultrasound DiagnosticReport;
- ``consultation.consultation_document``: WS/T 500.45 会诊记录 from a completed consultation;
- ``validate.problems``: the CDA R2 schema with the WS/T 500 overlay, then our rules;
- ``parse.read_report``: a WS/T 500.6 document back into a DiagnosticReport.

Inputs are FHIR dicts and a clock value; outputs bytes or dicts. No database, no network.
"""

from sonobridge.mappings.cda.header import DocumentVersion
from sonobridge.mappings.cda.problems import CdaError, MappingError, Problem

__all__ = ["CdaError", "DocumentVersion", "MappingError", "Problem"]
