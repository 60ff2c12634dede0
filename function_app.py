"""The Function App: bindings only. Logic lives in the orchestrators/ and activities/ blueprints."""

import azure.durable_functions as df
import azure.functions as func

from activities.azure_calls import bp as azure_activities
from activities.durable_calls import bp as durable_activities
from activities.ledger_calls import bp as ledger_activities
from orchestrators.fleet import bp as fleet_orchestrations
from orchestrators.installs import bp as install_orchestration
from orchestrators.ledger_route import bp as ledger_route
from orchestrators.machine import bp as machine_orchestration
from orchestrators.triggers import bp as client_functions

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (client_functions, fleet_orchestrations, machine_orchestration, install_orchestration,
                  azure_activities, durable_activities, ledger_activities, ledger_route):
    app.register_functions(blueprint)
