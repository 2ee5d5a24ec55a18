// Swagger UI over this server's OpenAPI document; its files come from /docs-assets/ (the
// swagger-ui-bundle package), so the page works offline and under the pages' CSP.
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
  });
});
