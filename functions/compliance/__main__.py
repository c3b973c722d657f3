from common.runtime import serve
from functions.compliance.app import app

serve(app)
