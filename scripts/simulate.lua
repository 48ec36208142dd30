-- wrk script: POST a seed-shaped simulation call.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"agentId":"bench","tool":{"name":"json_parse","args":{"data":{"key":"value","n":[1,2,3]}}},"context":{"purpose":"load test"}}'
