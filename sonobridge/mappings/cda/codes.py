"""The identifiers and codes a WS/T 500 document speaks (STANDARDS.md §7, §10).

OIDs under ``2.16.156.10011`` are the national health information ones: ``.1.x`` identifier
roots, ``.2.1.1.x`` document templates, ``.2.2.1`` the WS 363 data element directory (DE…),
``.2.3.x`` value domains (GB/T 2261.1 gender, ICD-10), ``.2.4`` the document type codes.
FHIR code systems are mapped to CDA OIDs both ways so codes survive a round trip.
"""

from __future__ import annotations

HL7_V3 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"

CDA_TYPE_ID = ("2.16.840.1.113883.1.3", "POCD_MT000040")
DOC_TYPE_SYSTEM = "2.16.156.10011.2.4"  # 卫生信息共享文档规范编码体系
DATA_ELEMENTS = "2.16.156.10011.2.2.1"  # 卫生信息数据元目录 (WS 363)
LOINC_OID = "2.16.840.1.113883.6.1"
CONFIDENTIALITY = "2.16.840.1.113883.5.25"

# WS/T 500.6 检查报告 and WS/T 500.45 会诊记录 (part N -> template .(20+N)).
REPORT_TEMPLATE = "2.16.156.10011.2.1.1.26"
REPORT_CODE = "C0006"
REPORT_TITLE = "检查报告"
CONSULT_TEMPLATE = "2.16.156.10011.2.1.1.65"
CONSULT_CODE = "C0045"
CONSULT_TITLE = "会诊记录"

# Identifier roots (2.16.156.10011.1.x).
DOCUMENT_ID = "2.16.156.10011.1.1"  # 文档流水号
ID_CARD = "2.16.156.10011.1.3"  # 身份证号
PRACTITIONER_ID = "2.16.156.10011.1.4"  # 医务人员 (审核医师, 报告医师)
ORGANIZATION_ID = "2.16.156.10011.1.5"  # 医疗卫生机构
OUTPATIENT_NO = "2.16.156.10011.1.11"  # 门(急)诊号
INPATIENT_NO = "2.16.156.10011.1.12"  # 住院号
HEALTH_CARD = "2.16.156.10011.1.19"  # 居民健康卡号
ORDER_NO = "2.16.156.10011.1.24"  # 电子申请单编号
DEPARTMENT_ID = "2.16.156.10011.1.26"  # 科室
REPORT_NO = "2.16.156.10011.1.32"  # 检查报告单号
# patientRole/id roots a WS/T 500.6 header may carry, and the ones a patient is matched on.
PATIENT_ROLE_IDS = (OUTPATIENT_NO, INPATIENT_NO, HEALTH_CARD, ORDER_NO, REPORT_NO,
                    "2.16.156.10011.1.14")
MATCHING_IDS = (ID_CARD, HEALTH_CARD, OUTPATIENT_NO, INPATIENT_NO)

GENDER_SYSTEM = "2.16.156.10011.2.3.3.4"  # GB/T 2261.1
GENDER_TO_CDA = {"male": ("1", "男性"), "female": ("2", "女性"), "other": ("9", "未说明的性别"),
                 "unknown": ("0", "未知的性别")}
GENDER_FROM_CDA = {"1": "male", "2": "female", "9": "other", "0": "unknown"}
ICD10_CN = "2.16.156.10011.2.3.3.11.3"  # 诊断代码表 (ICD-10)
RESULT_CODE_SYSTEM = "2.16.156.10011.2.3.2.38"  # 检查(检验)结果代码表
PATIENT_TYPE_SYSTEM = "2.16.156.10011.2.3.1.271"  # 患者类型代码表

# Section codes (LOINC) and data elements.
SEC_DIAGNOSIS = "29548-5"
SEC_CHIEF_COMPLAINT = "10154-3"
SEC_SYMPTOM = "11450-4"
SEC_PROCEDURES = "47519-4"
SEC_EXAM = "29545-1"
SEC_REPORT = "检查报告"  # the 检查报告 section has no LOINC code: told by its displayName
DE_DIAGNOSIS = "DE05.01.024.00"  # 诊断代码 (西医诊断编码)
DE_DIAGNOSIS_NAME = "DE05.01.025.00"  # 西医诊断名称
DE_SYMPTOM = "DE04.01.117.00"  # 症状描述
DE_METHOD = "DE02.10.027.00"  # 检查方法名称
DE_CATEGORY = "DE04.30.018.00"  # 检查类别
DE_ITEM = "DE04.30.019.00"  # 检查项目代码
DE_RESULT = "DE04.30.017.00"  # 检查结果代码
DE_QUANTITY = "DE04.30.015.00"  # 检查定量结果
DE_UNIT = "DE04.30.016.00"  # 检查定量结果计量单位
DE_FINDINGS = "DE04.50.131.00"  # 检查报告结果-客观所见
DE_IMPRESSION = "DE04.50.132.00"  # 检查报告结果-主观提示
DE_DEPARTMENT = "DE08.10.026.00"  # 检查报告科室
DE_INSTITUTION = "DE08.10.013.00"  # 检查报告机构名称
DE_NOTE = "DE06.00.179.00"  # 检查报告备注
# WS/T 500.45 会诊记录
DE_SUMMARY = "DE06.00.182.00"  # 病历摘要
DE_AUX_RESULTS = "DE04.30.009.00"  # 辅助检查结果
DE_PURPOSE = "DE06.00.214.00"  # 会诊目的
DE_CONSULT_TYPE = "DE06.00.319.00"  # 会诊类型
DE_REASON = "DE06.00.039.00"  # 会诊原因
DE_OPINION = "DE06.00.018.00"  # 会诊意见
SEC_CONSULT = "会诊意见"

# FHIR code system URI <-> CDA OID, so that codes survive a round trip.
SYSTEM_TO_OID = {
    "http://loinc.org": LOINC_OID,
    "http://snomed.info/sct": "2.16.840.1.113883.6.96",
    "http://unitsofmeasure.org": "2.16.840.1.113883.6.8",
    "http://dicom.nema.org/resources/ontology/DCM": "1.2.840.10008.2.16.4",
    "http://hl7.org/fhir/sid/icd-10": ICD10_CN,
    "http://hl7.org/fhir/sid/icd-10-cn": ICD10_CN,
}
OID_TO_SYSTEM = {
    LOINC_OID: "http://loinc.org",
    "2.16.840.1.113883.6.96": "http://snomed.info/sct",
    "2.16.840.1.113883.6.8": "http://unitsofmeasure.org",
    "1.2.840.10008.2.16.4": "http://dicom.nema.org/resources/ontology/DCM",
    ICD10_CN: "http://hl7.org/fhir/sid/icd-10",
}
ICD10_SYSTEMS = ("http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-cn",
                 f"urn:oid:{ICD10_CN}")

# The DocumentReference.format of a WS/T 500.6 document: the template id as a URI code.
FORMAT_SYSTEM = "urn:ietf:rfc:3986"
REPORT_FORMAT = f"urn:oid:{REPORT_TEMPLATE}"
CONSULT_FORMAT = f"urn:oid:{CONSULT_TEMPLATE}"
# The findings narrative of an ultrasound report (no R4 element holds it): a result
# Observation coded LOINC 59776-5 "Procedure findings Narrative" with a valueString.
FINDINGS_LOINC = "59776-5"
NARRATIVE_FINDINGS_CODES = ("59776-5", "18782-3")


def oid_of(system: str | None) -> str | None:
    """The CDA codeSystem OID of a FHIR code system (``urn:oid:`` systems as they are)."""
    if not system:
        return None
    if system.startswith("urn:oid:"):
        return system[len("urn:oid:"):]
    return SYSTEM_TO_OID.get(system)


def system_of(oid: str | None) -> str | None:
    """The FHIR code system of a CDA codeSystem OID (unknown OIDs as ``urn:oid:``)."""
    if not oid:
        return None
    return OID_TO_SYSTEM.get(oid, f"urn:oid:{oid}")
