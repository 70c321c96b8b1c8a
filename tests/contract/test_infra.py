"""The Azure deployment (infra/*.bicep, azure.yaml, .github/workflows/infra.yml), read as text.

The Bicep compiler is not available here; the shipped GitHub workflow compiles infra/main.bicep.
These tests read the Bicep with a small reader (tests/support/bicep.py) instead: the app settings
the function app gets (every setting the app reads, named exactly as shared/settings.py names
them), no keys or connection strings, the role definitions, the queue names, module wiring and
the YAML files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shared.settings import DEFAULTS, IDENTITY_STORAGE_SETTINGS, SETTING_NAMES, STORAGE_SETTING, Settings
from tests.support.bicep import (
    BicepReadError,
    _skip_balanced,
    app_settings,
    check_balanced,
    declared_names,
    identifiers,
    module_blocks,
    module_params,
    outputs,
    params,
    split_items,
    string_literal,
    strip_comments,
)
from tests.support.paths import ROOT

try:  # optional: YAML files are parsed when PyYAML is installed, else checked as text
    import yaml
except ImportError:  # pragma: no cover - depends on the environment
    yaml = None

INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
FUNCTION = INFRA / "app" / "function.bicep"
STORAGE = INFRA / "app" / "storage.bicep"
RBAC = INFRA / "app" / "rbac.bicep"
PARAMETERS = INFRA / "main.parameters.json"
AZURE_YAML = ROOT / "azure.yaml"
WORKFLOW = ROOT / ".github" / "workflows" / "infra.yml"

# Settings the deployment adds beyond the app's own: the host needs blob for leases and the
# timer's schedule status, and App Insights takes the identity's token (local auth is disabled).
DEPLOYMENT_SETTINGS = ("AzureWebJobsStorage__blobServiceUri", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING")
# Settings that may be present without the app reading them.
ALLOWED_EXTRA_SETTINGS = {"APPLICATIONINSIGHTS_CONNECTION_STRING", "AzureWebJobsStorage__accountName"}
# Flex Consumption takes these from functionAppConfig or has no use for them.
FLEX_DEPRECATED_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTOVERVNET",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
}

ROLE_DEFINITIONS = {
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "e582369a-e17b-42a5-b10c-874c387c530b": "Azure Arc ScVmm VM Contributor",
    "d5a91429-5739-47e2-a06b-3470a27159e7": "EventGrid Data Sender",
}

# What the app's identity holds on its storage account (docs/deploy.md, "Roles, and why each is
# needed"): the queues; host storage and the deployment package; the table of VM turns and policy
# runs (shared/vm_turns.py, shared/policy_runs.py), which the app also creates if missing.
IDENTITY_STORAGE_ROLES = {
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
}

SECRET_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"AccountKey=",
        r"SharedAccessSignature",
        r"SharedAccessKey",
        r"DefaultEndpointsProtocol=",
        r"UseDevelopmentStorage",
        r"[?&]sig=",
        r"\blistKeys\s*\(",
        r"\blist(Account|Service)Sas\s*\(",
        r"\blistConnectionStrings\s*\(",
    )
]


def required_settings() -> list[str]:
    """Every setting the deployed app must get: SETTING_NAMES with AzureWebJobsStorage replaced."""
    names = [n for n in SETTING_NAMES if n != STORAGE_SETTING]
    return [*names, *IDENTITY_STORAGE_SETTINGS, *DEPLOYMENT_SETTINGS]


def setting_problems(text: str) -> list[str]:
    """What is wrong with the app settings in `text` (a function app Bicep file); empty = fine."""
    entries = app_settings(text)
    names = [name for name, _ in entries]
    problems = []
    seen: dict[str, str] = {}
    for name in names:
        if name.lower() in seen:
            problems.append(f"{name}: set twice (app setting names are case-insensitive)")
        seen[name.lower()] = name
    required = required_settings()
    for name in required:
        if name in names:
            continue
        actual = seen.get(name.lower())
        problems.append(f"{name}: named differently ({actual})" if actual else f"{name}: missing")
    if STORAGE_SETTING.lower() in seen:
        problems.append(
            f"{STORAGE_SETTING}: must not be set (a connection string); use {', '.join(IDENTITY_STORAGE_SETTINGS)}"
        )
    known = {n.lower() for n in [*required, *ALLOWED_EXTRA_SETTINGS]}
    for name in names:
        if name.lower() not in known and name != STORAGE_SETTING:
            problems.append(f"{name}: not a setting the app reads")
    return problems


def secret_like_values(entries: list[tuple[str, str]]) -> list[str]:
    """Settings whose value looks like a key, a SAS or a connection string (or fetches one)."""
    return [name for name, value in entries if any(p.search(value) for p in SECRET_PATTERNS)]


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


# ---------------------------------------------------------------------------------------------
# App settings
# ---------------------------------------------------------------------------------------------


def test_the_function_app_is_the_only_site():
    sites = [p for p in bicep_files() if "Microsoft.Web/sites@" in read(p)]
    assert sites == [FUNCTION]


def test_every_setting_the_app_reads_is_set_with_its_exact_name():
    assert setting_problems(read(FUNCTION)) == []


@pytest.mark.parametrize("name", required_settings())
def test_the_check_reports_a_renamed_setting(name):
    text = read(FUNCTION)
    renamed = text.replace(f"name: '{name}'", f"name: '{name}_RENAMED'", 1)
    assert renamed != text, f"{name} not found as a literal `name:` in {FUNCTION}"
    problems = setting_problems(renamed)
    assert f"{name}: missing" in problems
    assert f"{name}_RENAMED: not a setting the app reads" in problems


@pytest.mark.parametrize("name", ["CHECKPOINT_TRACKING_QUEUE", "AzureWebJobsStorage__queueServiceUri"])
def test_the_check_reports_a_setting_named_with_other_case(name):
    text = read(FUNCTION).replace(f"name: '{name}'", f"name: '{name.lower()}'", 1)
    assert f"{name}: named differently ({name.lower()})" in setting_problems(text)


def test_the_check_reports_a_removed_setting():
    text = read(FUNCTION)
    removed, count = re.subn(r"\{\s*name:\s*'POLL_SCHEDULE'\s*value:[^\n]*\s*\}", "", text)
    assert count == 1
    assert setting_problems(removed) == ["POLL_SCHEDULE: missing"]


def test_the_check_reports_a_connection_string_setting():
    text = read(FUNCTION).replace(
        "appSettings: [",
        "appSettings: [\n        {\n          name: 'AzureWebJobsStorage'\n          value: 'UseDevelopmentStorage=true'\n        }",
        1,
    )
    assert any(p.startswith("AzureWebJobsStorage: must not be set") for p in setting_problems(text))


@pytest.mark.parametrize(
    "change",
    [
        # a second way of setting app settings the reader would not see
        lambda t: t + "\nresource cfg 'Microsoft.Web/sites/config@2024-04-01' = {\n  name: 'appsettings'\n}\n",
        # settings computed instead of listed
        lambda t: t.replace("appSettings: [", "appSettings: concat(extraSettings, [", 1).replace(
            "      ]\n    }\n  }\n}", "      ])\n    }\n  }\n}", 1
        ),
        # an entry that is not an object literal
        lambda t: t.replace("appSettings: [", "appSettings: [\n        extraSetting", 1),
        # a name that is not a literal
        lambda t: t.replace("name: 'POLL_SCHEDULE'", "name: pollScheduleSettingName", 1),
        # an entry with a third property
        lambda t: t.replace("name: 'POLL_SCHEDULE'", "name: 'POLL_SCHEDULE'\n          slotSetting: true", 1),
    ],
)
def test_the_reader_refuses_forms_it_cannot_read(change):
    text = read(FUNCTION)
    changed = change(text)
    assert changed != text
    with pytest.raises(BicepReadError):
        app_settings(changed)


def test_setting_values_refer_to_declared_names():
    text = read(FUNCTION)
    declared = declared_names(text)
    for name, value in app_settings(text):
        unknown = identifiers(value) - declared
        assert not unknown, f"{name} = {value} refers to undeclared {sorted(unknown)}"


def test_storage_is_identity_based():
    values = dict(app_settings(read(FUNCTION)))
    assert string_literal(values["AzureWebJobsStorage__credential"]) == "managedidentity"
    assert values["AzureWebJobsStorage__clientId"] == values["AZURE_CLIENT_ID"] == "identityClientId"
    assert values["AzureWebJobsStorage__queueServiceUri"].endswith("primaryEndpoints.queue")
    assert values["AzureWebJobsStorage__blobServiceUri"].endswith("primaryEndpoints.blob")
    assert values["AzureWebJobsStorage__tableServiceUri"] == "storage.properties.primaryEndpoints.table"
    assert values["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "'ClientId=${identityClientId};Authorization=AAD'"
    assert not FLEX_DEPRECATED_SETTINGS & set(values)


def test_no_setting_value_is_a_key_or_connection_string():
    assert secret_like_values(app_settings(read(FUNCTION))) == []


@pytest.mark.parametrize(
    "value",
    [
        "'DefaultEndpointsProtocol=https;AccountName=st;AccountKey=abc=='",
        "'https://st.queue.core.windows.net/?sv=2022-11-02&sig=abc'",
        "'Endpoint=sb://x/;SharedAccessKeyName=a;SharedAccessKey=b'",
        "storage.listKeys().keys[0].value",
    ],
)
def test_the_secret_check_catches_keys(value):
    assert secret_like_values([("X", value)]) == ["X"]


def test_no_template_fetches_keys():
    for path in bicep_files():
        code = strip_comments(read(path))
        hits = [p.pattern for p in SECRET_PATTERNS if p.search(code)]
        assert not hits, f"{path.relative_to(ROOT)}: {hits}"


def test_storage_account_allows_no_shared_key_and_no_public_blobs():
    code = strip_comments(read(STORAGE))
    assert re.search(r"^\s*allowSharedKeyAccess:\s*false\s*$", code, re.MULTILINE)
    assert re.search(r"^\s*allowBlobPublicAccess:\s*false\s*$", code, re.MULTILINE)
    assert re.search(r"^\s*minimumTlsVersion:\s*'TLS1_2'\s*$", code, re.MULTILINE)


def test_application_insights_disables_local_auth():
    code = strip_comments(read(INFRA / "app" / "monitoring.bicep"))
    assert re.search(r"^\s*DisableLocalAuth:\s*true\s*$", code, re.MULTILINE)
    assert "WorkspaceResourceId:" in code


# ---------------------------------------------------------------------------------------------
# Hosting, roles, queues
# ---------------------------------------------------------------------------------------------


def test_function_app_is_flex_consumption_python_with_identity_deployment_storage():
    code = strip_comments(read(FUNCTION))
    for fragment in (
        "name: 'FC1'",
        "tier: 'FlexConsumption'",
        "kind: 'functionapp,linux'",
        "type: 'blobContainer'",
        "type: 'UserAssignedIdentity'",
        "userAssignedIdentityResourceId: identityId",
        "maximumInstanceCount: maximumInstanceCount",
        "name: 'python'",
        "version: pythonVersion",
    ):
        assert fragment in code, fragment
    main_params = params(read(MAIN))
    assert main_params["pythonVersion"] == "'3.11'"
    assert 40 <= int(main_params["maximumInstanceCount"]) <= 1000


@pytest.mark.parametrize(("role_id", "role_name"), ROLE_DEFINITIONS.items())
def test_role_definition_is_assigned(role_id, role_name):
    files = [p for p in bicep_files() if role_id in strip_comments(read(p))]
    assert files, f"{role_name} ({role_id}) is not in any template"
    assert any("Microsoft.Authorization/roleAssignments@" in read(p) for p in files) or role_id in read(MAIN)


def role_assignments(text: str) -> dict[str, dict[str, str]]:
    """symbol -> `key: value` lines (nested ones too) of each Microsoft.Authorization/roleAssignments
    resource in a Bicep file; a key that appears twice in one resource is an error."""
    code = strip_comments(text)
    found = {}
    head = r"^resource\s+(\w+)\s+'Microsoft\.Authorization/roleAssignments@[^']+'\s*=\s*(?:if\s*\(.*?\)\s*)?\{"
    for m in re.finditer(head, code, re.MULTILINE):
        start = m.end() - 1
        body = code[start + 1 : _skip_balanced(code, start) - 1]
        props: dict[str, str] = {}
        for key, value in re.findall(r"^\s*(\w+):\s*(.+?)\s*$", body, re.MULTILINE):
            assert key not in props, f"{m.group(1)}: {key} twice"
            props[key] = value
        found[m.group(1)] = props
    return found


def role_ids(text: str) -> dict[str, str]:
    """The `var roles = { key: '<role definition id>' }` of a Bicep file."""
    m = re.search(r"^var roles = \{(.*?)^\}", strip_comments(text), re.MULTILINE | re.DOTALL)
    assert m, "var roles = {...} not found"
    return {
        key: string_literal(value) for key, value in re.findall(r"^\s*(\w+):\s*(.+?)\s*$", m.group(1), re.MULTILINE)
    }


def identity_storage_roles(text: str) -> set[str]:
    """Role definition ids assigned to the app identity on the storage account in rbac.bicep, each
    checked for the form the file uses (guid name, ServicePrincipal, a description)."""
    roles = role_ids(text)
    assigned = set()
    for symbol, props in role_assignments(text).items():
        if props.get("principalId") != "identityPrincipalId" or props.get("scope") != "storage":
            continue
        m = re.fullmatch(
            r"subscriptionResourceId\('Microsoft\.Authorization/roleDefinitions', roles\.(\w+)\)",
            props.get("roleDefinitionId", ""),
        )
        assert m and m.group(1) in roles, f"{symbol}: roleDefinitionId {props.get('roleDefinitionId')}"
        assert props.get("name") == f"guid(storage.id, identityPrincipalId, roles.{m.group(1)})", symbol
        assert props.get("principalType") == "'ServicePrincipal'", symbol
        assert (string_literal(props.get("description", "")) or "").startswith("Checkpoint deletion app: "), symbol
        assigned.add(roles[m.group(1)])
    return assigned


def test_the_identity_holds_the_storage_roles_the_app_needs():
    text = read(RBAC)
    assert identity_storage_roles(text) == set(IDENTITY_STORAGE_ROLES)
    assert role_ids(text)["storageTableDataContributor"] == "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
    modules = module_blocks(read(MAIN))
    assert modules["rbac"][0] == "app/rbac.bicep"
    rbac = module_params(modules["rbac"][1])
    assert rbac["storageAccountName"] == "storage.outputs.name"
    assert rbac["identityPrincipalId"] == "identity.outputs.principalId"
    # the host starts as soon as the site exists: its roles are in place by then
    assert re.search(r"dependsOn:\s*\[\s*rbac\s*\]", modules["api"][1])


def test_the_check_reports_a_removed_table_role():
    text = read(RBAC)
    removed, count = re.subn(
        r"^resource identityTableDataContributor .*?^\}\n", "", text, flags=re.MULTILINE | re.DOTALL
    )
    assert count == 1
    assert identity_storage_roles(removed) == set(IDENTITY_STORAGE_ROLES) - {"0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"}
    elsewhere = text.replace(
        "name: guid(storage.id, identityPrincipalId, roles.storageTableDataContributor)\n  scope: storage",
        "name: guid(storage.id, identityPrincipalId, roles.storageTableDataContributor)\n  scope: applicationInsights",
    )
    assert elsewhere != text
    assert "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3" not in identity_storage_roles(elsewhere)


def test_scvmm_role_scope_is_a_resource_group_or_the_subscription():
    code = strip_comments(read(MAIN))
    m = re.search(
        r"@allowed\(\[\s*'resourceGroup'\s*'subscription'\s*\]\)\s*\n(?:@\w+\(.*\)\s*\n)*param scvmmRoleScope string",
        code,
    )
    assert m, "scvmmRoleScope must allow exactly 'resourceGroup' and 'subscription'"
    modules = module_blocks(read(MAIN))
    assert modules["scvmmRoleResourceGroup"][0] == "app/role-assignment-rg.bicep"
    assert "resourceGroup(scvmmSubscription, scvmmResourceGroup)" in modules["scvmmRoleResourceGroup"][1]
    assert modules["scvmmRoleSubscription"][0] == "app/role-assignment-subscription.bicep"
    assert "subscription(scvmmSubscription)" in modules["scvmmRoleSubscription"][1]


def test_queue_names_default_to_the_contract():
    main_params = params(read(MAIN))
    for param, setting in (
        ("requestsQueueName", "CHECKPOINT_REQUESTS_QUEUE"),
        ("trackingQueueName", "CHECKPOINT_TRACKING_QUEUE"),
        ("eventsQueueName", "CHECKPOINT_EVENTS_QUEUE"),
    ):
        assert string_literal(main_params[param]) == DEFAULTS[setting], param
    parameters = json.loads(read(PARAMETERS))["parameters"]
    assert parameters["requestsQueueName"]["value"] == "${CHECKPOINT_REQUESTS_QUEUE=checkpoint-delete-requests}"
    assert parameters["trackingQueueName"]["value"] == "${CHECKPOINT_TRACKING_QUEUE=checkpoint-delete-tracking}"
    assert parameters["eventsQueueName"]["value"] == "${CHECKPOINT_EVENTS_QUEUE=checkpoint-delete-events}"


def test_the_queues_created_are_the_queues_the_app_is_told():
    main = strip_comments(read(MAIN))
    assert "var poisonQueueName = '${requestsQueueName}-poison'" in main
    m = re.search(r"var queueNames = \[(.*?)\]", main, re.DOTALL)
    assert m and split_items(m.group(1)) == [
        "requestsQueueName",
        "poisonQueueName",
        "trackingQueueName",
        "eventsQueueName",
    ]
    modules = module_blocks(read(MAIN))
    assert module_params(modules["storage"][1])["queueNames"] == "allQueueNames"
    assert "var allQueueNames = eventGridEnabled ? concat(queueNames, outboxQueueNames) : queueNames" in main
    api = module_params(modules["api"][1])
    values = dict(app_settings(read(FUNCTION)))
    for param, setting in (
        ("requestsQueueName", "CHECKPOINT_REQUESTS_QUEUE"),
        ("trackingQueueName", "CHECKPOINT_TRACKING_QUEUE"),
        ("eventsQueueName", "CHECKPOINT_EVENTS_QUEUE"),
    ):
        assert api[param] == param  # main passes its parameter on unchanged
        assert values[setting] == param  # and the module sets it as the app setting
    storage = strip_comments(read(STORAGE))
    assert re.search(r"queueServices/queues@[\d-]+' = \[for queueName in queueNames: \{", storage)


def test_the_turns_table_is_the_one_the_app_is_told():
    main = read(MAIN)
    default = string_literal(params(main)["turnsTableName"])
    assert default == DEFAULTS["CHECKPOINT_TURNS_TABLE"]
    # a name the app accepts (3-63 letters and digits, a letter first) and the decorators that bound it
    settings = Settings.from_env(
        {f"{STORAGE_SETTING}__queueServiceUri": "https://st.queue.core.windows.net", "CHECKPOINT_TURNS_TABLE": default}
    )
    assert settings.turns_table == default
    assert re.search(r"@minLength\(3\)\n@maxLength\(63\)\n(?:@.*\n)*param turnsTableName string", strip_comments(main))
    parameters = json.loads(read(PARAMETERS))["parameters"]
    assert parameters["turnsTableName"]["value"] == "${CHECKPOINT_TURNS_TABLE=checkpointturns}"
    modules = module_blocks(main)
    assert module_params(modules["api"][1])["turnsTableName"] == "turnsTableName"
    values = dict(app_settings(read(FUNCTION)))
    assert values["CHECKPOINT_TURNS_TABLE"] == "turnsTableName"
    # the template creates it too (the app would on its first start)
    tables = module_params(modules["storage"][1])["tableNames"]
    assert tables.startswith("[") and tables.endswith("]")
    assert split_items(tables[1:-1]) == ["turnsTableName"]
    storage = strip_comments(read(STORAGE))
    assert re.search(r"tableServices/tables@[\d-]+' = \[for tableName in tableNames: \{", storage)
    assert "CHECKPOINT_TURNS_TABLE" in outputs(main)


def test_the_event_grid_outbox_queue_is_the_one_the_app_uses():
    settings = Settings.from_env({f"{STORAGE_SETTING}__queueServiceUri": "https://st.queue.core.windows.net"})
    assert settings.outbox_queue == f"{settings.events_queue}-outbox"
    assert settings.deadletter_queue == f"{settings.events_queue}-deadletter"
    main = strip_comments(read(MAIN))
    assert "var outboxQueueName = '${eventsQueueName}-outbox'" in main
    assert "'${eventsQueueName}-deadletter'" in main.split("var outboxQueueNames", 1)[1].split("]", 1)[0]
    assert "var eventGridEnabled = !empty(eventGridTopicEndpoint) || !empty(eventGridTopicResourceId)" in main
    # '<events queue>-deadletter' must stay a valid queue name (63 characters at most)
    assert re.search(r"@maxLength\(52\)[^\n]*\n(?:@.*\n)*param eventsQueueName string", main)


def test_other_setting_defaults_follow_the_contract():
    main = read(MAIN)
    main_params = params(main)
    assert string_literal(main_params["armApiVersion"]) == DEFAULTS["ARM_API_VERSION"]
    assert string_literal(main_params["pollSchedule"]) == DEFAULTS["POLL_SCHEDULE"]
    assert main_params["operationTimeoutSeconds"] == DEFAULTS["OPERATION_TIMEOUT_SECONDS"]
    assert main_params["pollFailureWindowSeconds"] == DEFAULTS["POLL_FAILURE_WINDOW_SECONDS"]
    assert string_literal(main_params["eventGridTopicEndpoint"]) == ""
    code = strip_comments(main)
    # ARM_ENDPOINT: the cloud's resource manager without its trailing slash, unless given.
    assert "environment().resourceManager" in code
    assert "substring(armEndpointRaw, 0, length(armEndpointRaw) - 1)" in code
    assert f"'{DEFAULTS['POLL_SCHEDULE']}'" in code.split("var pollScheduleValue", 1)[1].splitlines()[0]


# ---------------------------------------------------------------------------------------------
# Wiring: files, modules, parameters (what the compiler would catch first)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_bicep_brackets_and_strings_close(path):
    check_balanced(strip_comments(read(path)))


# Functions and decorators these templates call: a symbol with one of these names would shadow it
# (e.g. `param description string` breaks every `@description(...)` in its file).
BICEP_FUNCTIONS = {
    "allowed", "array", "bool", "concat", "deployment", "description", "empty", "endsWith", "environment",
    "guid", "int", "length", "loadJsonContent", "maxLength", "maxValue", "metadata", "minLength", "minValue",
    "object", "reference", "resourceGroup", "resourceId", "secure", "split", "string", "subscription",
    "subscriptionResourceId", "substring", "take", "tenant", "toLower", "union", "uniqueString",
}  # fmt: skip


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_no_symbol_shadows_a_function(path):
    code = strip_comments(read(path))
    symbols = set(re.findall(r"^(?:param|var|resource|module|output)\s+(\w+)\b", code, re.MULTILINE))
    assert not symbols & BICEP_FUNCTIONS


def test_modules_exist_and_get_the_params_they_declare():
    for path in bicep_files():
        for symbol, (module_path, body) in module_blocks(read(path)).items():
            target = path.parent / module_path
            assert target.is_file(), f"{path.name}: module {symbol} -> {module_path} does not exist"
            declared = params(read(target))
            given = module_params(body)
            unknown = set(given) - set(declared)
            assert not unknown, f"{path.name}: module {symbol} gets undeclared params {sorted(unknown)}"
            missing = {p for p, default in declared.items() if default is None} - set(given)
            assert not missing, f"{path.name}: module {symbol} lacks required params {sorted(missing)}"


def test_module_outputs_used_are_declared():
    for path in bicep_files():
        code = strip_comments(read(path))
        modules = module_blocks(code)
        for symbol, output in re.findall(r"\b(\w+)\.outputs\.(\w+)", code):
            assert symbol in modules, f"{path.name}: {symbol} is not a module"
            assert output in outputs(read(path.parent / modules[symbol][0])), f"{path.name}: {symbol}.outputs.{output}"


def test_abbreviations_used_exist():
    abbrs = json.loads(read(INFRA / "abbreviations.json"))
    assert "loadJsonContent('abbreviations.json')" in read(MAIN)
    used = set(re.findall(r"\babbrs\.(\w+)", strip_comments(read(MAIN))))
    assert used and used <= set(abbrs)


def test_parameters_file_matches_main():
    declared = params(read(MAIN))
    given = json.loads(read(PARAMETERS))["parameters"]
    assert set(given) <= set(declared), sorted(set(given) - set(declared))
    required = {p for p, default in declared.items() if default is None}
    assert required == {"environmentName", "location"}
    assert required <= set(given)
    assert given["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert given["location"]["value"] == "${AZURE_LOCATION}"
    assert given["scvmmRoleScope"]["value"] == "${SCVMM_ROLE_SCOPE=resourceGroup}"


def test_main_is_subscription_scoped_and_outputs_what_azd_needs():
    code = strip_comments(read(MAIN))
    assert re.search(r"^targetScope = 'subscription'$", code, re.MULTILINE)
    assert "resource rg 'Microsoft.Resources/resourceGroups@" in code
    assert {
        "AZURE_LOCATION",
        "AZURE_TENANT_ID",
        "AZURE_RESOURCE_GROUP",
        "AZURE_FUNCTION_APP_NAME",
        "AZURE_STORAGE_ACCOUNT_NAME",
        "CHECKPOINT_REQUESTS_QUEUE",
        "CHECKPOINT_EVENTS_QUEUE",
        "CHECKPOINT_TURNS_TABLE",
    } <= outputs(code)
    assert "'azd-service-name': 'api'" in code


# ---------------------------------------------------------------------------------------------
# azure.yaml and the workflow: parsed with PyYAML when installed, else checked as text
# ---------------------------------------------------------------------------------------------

YAML_MODES = [
    pytest.param("yaml", marks=pytest.mark.skipif(yaml is None, reason="PyYAML is not installed")),
    "text",
]


@pytest.mark.parametrize("mode", YAML_MODES)
def test_azure_yaml(mode):
    text = read(AZURE_YAML)
    if mode == "yaml":
        doc = yaml.safe_load(text)
        assert doc["services"]["api"] == {"project": ".", "language": "python", "host": "function"}
        assert doc["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    else:
        assert "\t" not in text
        assert re.search(r"^services:\n  api:\n(    \w+: .+\n){3}", text, re.MULTILINE)
        for line in ("    project: .", "    language: python", "    host: function"):
            assert re.search(rf"^{re.escape(line)}$", text, re.MULTILINE), line


@pytest.mark.parametrize("mode", YAML_MODES)
def test_infra_workflow(mode):
    text = read(WORKFLOW)
    if mode == "yaml":
        doc = yaml.safe_load(text)
        triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as true
        assert "push" in triggers and "workflow_dispatch" in triggers
        build, what_if = doc["jobs"]["bicep-build"], doc["jobs"]["what-if"]
        assert any("az bicep build --file infra/main.bicep" in s.get("run", "") for s in build["steps"])
        assert what_if["if"] == "github.event_name == 'workflow_dispatch'"
        assert what_if["permissions"]["id-token"] == "write"
        assert any(s.get("uses", "").startswith("azure/login@") for s in what_if["steps"])
        assert any("az deployment sub what-if" in s.get("run", "") for s in what_if["steps"])
    else:
        assert "\t" not in text
        assert re.search(r"^on:\n  push:\n  workflow_dispatch:", text, re.MULTILINE)
        for fragment in (
            "az bicep build --file infra/main.bicep",
            "if: github.event_name == 'workflow_dispatch'",
            "id-token: write",
            "uses: azure/login@",
            "az deployment sub what-if",
        ):
            assert fragment in text, fragment
